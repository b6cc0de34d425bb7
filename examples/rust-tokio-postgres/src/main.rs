//! Payments in a ledger table, appended by several connections at once with tokio-postgres.
//!
//! The program writes plain INSERTs and computes no hash: the ledger's trigger gives every record
//! its seq, prev_hash and hash. It then checks what the ledger promises and exits 0 only if all of it
//! held: each chain is dense (seq 1..n) and linked (prev_hash = the previous record's hash), an
//! UPDATE is refused with SQLSTATE 23001, and ledger.verify finds nothing.
//!
//! Connects from PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD), to a database without a
//! payments table, as a role that may create the extension (or with it already created).

use std::collections::BTreeMap;
use std::env;
use std::error::Error;
use std::process::ExitCode;

use tokio::task::JoinSet;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

const WORKERS: usize = 4;
const APPENDS_PER_CHAIN: usize = 10; // by each worker, to the shared chain and to its own
const SHARED_CHAIN: &str = "shared";

const SCHEMA: &str = "
    CREATE EXTENSION IF NOT EXISTS ledger;
    CREATE TABLE payments (
        id bigserial PRIMARY KEY,
        account text NOT NULL,
        amount numeric(12, 2) NOT NULL,
        paid_at timestamptz NOT NULL DEFAULT now()
    );
    SELECT ledger.enable('payments', chain_by => 'account');";

/// One appended record as the INSERT returned it.
struct Link {
    account: String,
    seq: i64,
    prev_hash: Option<String>,
    hash: String,
}

/// tokio-postgres reads no environment of its own: take libpq's variables, with libpq's defaults.
fn config_from_env() -> Config {
    let var = |name: &str| env::var(name).ok().filter(|value| !value.is_empty());
    let user = var("PGUSER").or_else(|| var("USER")).unwrap_or_else(|| "postgres".into());
    let mut config = Config::new();
    // A host that starts with '/' is the directory of a unix socket, as in libpq.
    config.host(var("PGHOST").as_deref().unwrap_or("/var/run/postgresql"));
    config.port(var("PGPORT").and_then(|port| port.parse().ok()).unwrap_or(5432));
    config.dbname(var("PGDATABASE").unwrap_or_else(|| user.clone()));
    config.user(user);
    if let Some(password) = var("PGPASSWORD") {
        config.password(password);
    }
    config
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    // The connection does the socket I/O for the client: it runs as a task of its own.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("connection error: {error}");
        }
    });
    Ok(client)
}

/// Appends to the shared chain and to this worker's own chain, alternately, on a connection of its
/// own. Outside a transaction block each INSERT commits by itself, so the workers' appends to the
/// shared chain interleave; the ledger serialises them per chain, never across chains.
async fn append_payments(config: Config, worker: usize) -> Result<Vec<Link>, tokio_postgres::Error> {
    let client = connect(&config).await?;
    // tokio-postgres has no numeric type without an extra crate: the amount travels as text.
    let insert = client
        .prepare(
            "INSERT INTO payments (account, amount) VALUES ($1, $2::text::numeric) \
             RETURNING seq, prev_hash, hash",
        )
        .await?;
    let own_chain = format!("worker-{worker}");
    let mut appended = Vec::new();
    for i in 0..APPENDS_PER_CHAIN {
        for account in [SHARED_CHAIN, own_chain.as_str()] {
            let amount = format!("{worker}.{i:02}");
            let row = client.query_one(&insert, &[&account, &amount]).await?;
            appended.push(Link { account: account.into(), seq: row.get(0), prev_hash: row.get(1), hash: row.get(2) });
        }
    }
    Ok(appended)
}

fn chains_are_dense_and_linked(appended: Vec<Link>) -> bool {
    let mut chains: BTreeMap<String, Vec<Link>> = BTreeMap::new();
    for link in appended {
        chains.entry(link.account.clone()).or_default().push(link);
    }
    let mut intact = true;
    for (account, mut links) in chains {
        links.sort_by_key(|link| link.seq);
        if !links.iter().zip(1..).all(|(link, seq)| link.seq == seq) {
            let seqs: Vec<i64> = links.iter().map(|link| link.seq).collect();
            println!("chain {account}: seqs are not 1..{}: {seqs:?}", links.len());
            intact = false;
            continue;
        }
        let mut previous_hash: Option<&str> = None; // the first record of a chain links to nothing
        let broken = links.iter().find(|link| {
            let linked = link.prev_hash.as_deref() == previous_hash;
            previous_hash = Some(&link.hash);
            !linked
        });
        match broken {
            Some(link) => {
                println!("chain {account}: seq {} does not link to the record before it", link.seq);
                intact = false;
            }
            None => println!("chain {account}: seq 1..{}, linked, head {}", links.len(), links[links.len() - 1].hash),
        }
    }
    intact
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let config = config_from_env();
    let client = connect(&config).await?;
    client.batch_execute(SCHEMA).await?;

    // Tasks on one thread, but each with its own connection: the server sees concurrent writers.
    let mut workers = JoinSet::new();
    for worker in 1..=WORKERS {
        workers.spawn(append_payments(config.clone(), worker));
    }
    let mut appended = Vec::new();
    while let Some(result) = workers.join_next().await {
        appended.extend(result??);
    }
    println!("appended {} records from {WORKERS} concurrent connections", appended.len());
    let complete = appended.len() == WORKERS * APPENDS_PER_CHAIN * 2;
    let mut held = chains_are_dense_and_linked(appended) && complete;

    let update = "UPDATE payments SET amount = 0 WHERE account = $1 AND seq = 1";
    match client.execute(update, &[&SHARED_CHAIN]).await {
        Ok(_) => {
            println!("UPDATE was accepted: the ledger did not protect its records");
            held = false;
        }
        Err(error) => {
            let refusal = error.as_db_error().ok_or(error.to_string())?; // else not the server's answer
            println!("UPDATE refused: SQLSTATE {}: {}", refusal.code().code(), refusal.message());
            held &= *refusal.code() == SqlState::RESTRICT_VIOLATION;
        }
    }

    let problems = client.query("SELECT * FROM ledger.verify('payments')", &[]).await?;
    println!("ledger.verify('payments'): {} problems", problems.len());
    for problem in &problems {
        let (chain, seq, what, detail): (Option<String>, Option<i64>, String, Option<String>) =
            (problem.get(0), problem.get(1), problem.get(2), problem.get(3));
        println!("  chain {chain:?} seq {seq:?}: {what} {detail:?}");
    }
    held &= problems.is_empty();

    println!("{}", if held { "every claim held" } else { "a claim did not hold" });
    Ok(if held { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
