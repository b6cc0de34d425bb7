#!/usr/bin/env bash
# Type-checks the extension against every PostgreSQL major the crate has a feature for, on machines
# that have only one server installed: pgrx-pg-sys ships pre-generated bindings for each major, used
# when it is built for docs.rs (DOCS_RS=1, and --cfg docsrs for that one crate only).
#   scripts/check-majors.sh [13 14 ...]     (default: 13 to 18)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}/other-majors
mkdir -p "$target"
wrapper=$target/rustc-docsrs-pg-sys
cat >"$wrapper" <<'WRAP'
#!/usr/bin/env bash
# RUSTC_WRAPPER: rustc as given, with --cfg docsrs when compiling pgrx-pg-sys.
rustc=$1; shift
for arg in "$@"; do
  [[ $arg == pgrx_pg_sys ]] && exec "$rustc" "$@" --cfg docsrs
done
exec "$rustc" "$@"
WRAP
chmod +x "$wrapper"
majors=("$@")
((${#majors[@]})) || majors=(13 14 15 16 17 18)
for major in "${majors[@]}"; do
  echo "check-majors: pg$major"
  RUSTC_WRAPPER=$wrapper DOCS_RS=1 cargo check --quiet --lib --no-default-features --features "pg$major" \
    --target-dir "$target"
done
