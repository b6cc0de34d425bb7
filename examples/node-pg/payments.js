// Payments in a ledger table, appended by several connections at once with node-postgres (pg).
//
// The program writes plain INSERTs and computes no hash: the ledger's trigger gives every record its
// seq, prev_hash and hash. It then checks what the ledger promises and exits 0 only if all of it held:
// each chain is dense (seq 1..n) and linked (prev_hash = the previous record's hash), an UPDATE is
// refused with SQLSTATE 23001, and ledger.verify finds nothing.
//
// pg connects from PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD) as libpq does, to a database
// without a payments table, as a role that may create the extension (or with it already created).
import pg from "pg";

const WORKERS = 4;
const APPENDS_PER_CHAIN = 10; // by each worker, to the shared chain and to its own
const SHARED_CHAIN = "shared";

const SCHEMA = `
  CREATE EXTENSION IF NOT EXISTS ledger;
  CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    paid_at timestamptz NOT NULL DEFAULT now()
  );
  SELECT ledger.enable('payments', chain_by => 'account');`;

// Appends to the shared chain and to this worker's own chain, alternately, on a connection of its own.
// Outside a transaction block each INSERT commits by itself, so the workers' appends to the shared
// chain interleave; the ledger serialises them per chain, never across chains.
async function appendPayments(pool, worker, appended) {
  const client = await pool.connect();
  try {
    for (let i = 0; i < APPENDS_PER_CHAIN; i++) {
      for (const account of [SHARED_CHAIN, `worker-${worker}`]) {
        const amount = `${worker}.${String(i).padStart(2, "0")}`; // numeric travels as text, exactly
        const { rows } = await client.query(
          "INSERT INTO payments (account, amount) VALUES ($1, $2) RETURNING account, seq, prev_hash, hash",
          [account, amount],
        );
        // pg returns bigint as a string, since not every bigint fits a JavaScript number.
        appended.push({ ...rows[0], seq: Number(rows[0].seq) });
      }
    }
  } finally {
    client.release();
  }
}

function chainsAreDenseAndLinked(appended) {
  const chains = new Map();
  for (const record of appended) {
    if (!chains.has(record.account)) chains.set(record.account, []);
    chains.get(record.account).push(record);
  }
  let intact = true;
  for (const [account, links] of [...chains].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    links.sort((a, b) => a.seq - b.seq);
    if (!links.every((link, i) => link.seq === i + 1)) {
      console.log(`chain ${account}: seqs are not 1..${links.length}: ${links.map((l) => l.seq)}`);
      intact = false;
      continue;
    }
    let previousHash = null; // the first record of a chain links to nothing
    const broken = links.find((link) => {
      const linked = link.prev_hash === previousHash;
      previousHash = link.hash;
      return !linked;
    });
    if (broken) {
      console.log(`chain ${account}: seq ${broken.seq} does not link to the record before it`);
      intact = false;
    } else {
      console.log(`chain ${account}: seq 1..${links.length}, linked, head ${previousHash}`);
    }
  }
  return intact;
}

async function main() {
  const pool = new pg.Pool({ max: WORKERS });
  try {
    await pool.query(SCHEMA); // several statements: one simple query, one implicit transaction

    const appended = [];
    const workers = [];
    for (let worker = 1; worker <= WORKERS; worker++) workers.push(appendPayments(pool, worker, appended));
    await Promise.all(workers);
    console.log(`appended ${appended.length} records from ${WORKERS} concurrent connections`);
    let held = chainsAreDenseAndLinked(appended);
    if (appended.length !== WORKERS * APPENDS_PER_CHAIN * 2) held = false;

    try {
      await pool.query("UPDATE payments SET amount = 0 WHERE account = $1 AND seq = 1", [SHARED_CHAIN]);
      console.log("UPDATE was accepted: the ledger did not protect its records");
      held = false;
    } catch (error) {
      if (!error.code) throw error; // not an error the server sent
      console.log(`UPDATE refused: SQLSTATE ${error.code}: ${error.message}`);
      if (error.code !== "23001") held = false;
    }

    const { rows: problems } = await pool.query("SELECT * FROM ledger.verify('payments')");
    console.log(`ledger.verify('payments'): ${problems.length} problems`);
    for (const problem of problems) console.log(`  ${JSON.stringify(problem)}`);
    if (problems.length) held = false;

    console.log(held ? "every claim held" : "a claim did not hold");
    process.exitCode = held ? 0 : 1;
  } finally {
    await pool.end();
  }
}

await main();
