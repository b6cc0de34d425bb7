// Payments in a ledger table, appended by several connections at once with JDBC (pgjdbc).
//
// The program writes plain INSERTs and computes no hash: the ledger's trigger gives every record its
// seq, prev_hash and hash. It then checks what the ledger promises and exits 0 only if all of it held:
// each chain is dense (seq 1..n) and linked (prev_hash = the previous record's hash), an UPDATE is
// refused with SQLSTATE 23001, and ledger.verify finds nothing.
//
// Connects to the database that PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD) name, without a
// payments table, as a role that may create the extension (or with it already created). JDBC speaks
// TCP only, so PGHOST must name a host, not a unix socket directory.
//
//   javac -d out Payments.java && java -cp out:/usr/share/java/postgresql.jar Payments

import java.math.BigDecimal;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public final class Payments {
    static final int WORKERS = 4;
    static final int APPENDS_PER_CHAIN = 10; // by each worker, to the shared chain and to its own
    static final String SHARED_CHAIN = "shared";

    static final String SCHEMA = """
        CREATE EXTENSION IF NOT EXISTS ledger;
        CREATE TABLE payments (
            id bigserial PRIMARY KEY,
            account text NOT NULL,
            amount numeric(12, 2) NOT NULL,
            paid_at timestamptz NOT NULL DEFAULT now()
        );
        SELECT ledger.enable('payments', chain_by => 'account');
        """;

    /** One appended record as the INSERT returned it. */
    record Link(String account, long seq, String prevHash, String hash) {}

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    static Connection connect() throws SQLException {
        String host = env("PGHOST", "localhost");
        if (host.startsWith("/")) {
            throw new IllegalStateException("PGHOST is a unix socket directory, " + host + "; JDBC needs a TCP host");
        }
        Properties properties = new Properties();
        String user = env("PGUSER", System.getProperty("user.name"));
        properties.setProperty("user", user);
        Optional.ofNullable(System.getenv("PGPASSWORD")).ifPresent(p -> properties.setProperty("password", p));
        String database = URLEncoder.encode(env("PGDATABASE", user), StandardCharsets.UTF_8);
        return DriverManager.getConnection(
            "jdbc:postgresql://" + host + ":" + env("PGPORT", "5432") + "/" + database, properties);
    }

    /**
     * Appends to the shared chain and to this worker's own chain, alternately, on a connection of its
     * own. In autocommit mode (JDBC's default) each INSERT is a transaction of its own, so the workers'
     * appends to the shared chain interleave; the ledger serialises them per chain, never across chains.
     */
    static List<Link> appendPayments(int worker) throws SQLException {
        List<Link> appended = new ArrayList<>();
        try (Connection connection = connect();
             PreparedStatement insert = connection.prepareStatement(
                 "INSERT INTO payments (account, amount) VALUES (?, ?) RETURNING seq, prev_hash, hash")) {
            for (int i = 0; i < APPENDS_PER_CHAIN; i++) {
                for (String account : List.of(SHARED_CHAIN, "worker-" + worker)) {
                    insert.setString(1, account);
                    insert.setBigDecimal(2, new BigDecimal(String.format("%d.%02d", worker, i)));
                    try (ResultSet row = insert.executeQuery()) {
                        row.next();
                        appended.add(new Link(account, row.getLong(1), row.getString(2), row.getString(3)));
                    }
                }
            }
        }
        return appended;
    }

    static boolean chainsAreDenseAndLinked(List<Link> appended) {
        Map<String, List<Link>> chains = new TreeMap<>();
        for (Link link : appended) chains.computeIfAbsent(link.account(), a -> new ArrayList<>()).add(link);
        boolean intact = true;
        for (var chain : chains.entrySet()) {
            String account = chain.getKey();
            List<Link> links = chain.getValue();
            links.sort(Comparator.comparingLong(Link::seq));
            String previousHash = null; // the first record of a chain links to nothing
            Link broken = null;
            for (int i = 0; i < links.size() && broken == null; i++) {
                Link link = links.get(i);
                if (link.seq() != i + 1 || !Objects.equals(link.prevHash(), previousHash)) broken = link;
                previousHash = link.hash();
            }
            if (broken != null) {
                System.out.printf("chain %s: seq %d is not the next link of a dense chain%n", account, broken.seq());
                intact = false;
            } else {
                System.out.printf("chain %s: seq 1..%d, linked, head %s%n", account, links.size(), previousHash);
            }
        }
        return intact;
    }

    public static void main(String[] args) throws Exception {
        boolean held = run();
        System.out.println(held ? "every claim held" : "a claim did not hold");
        System.exit(held ? 0 : 1);
    }

    static boolean run() throws Exception {
        try (Connection connection = connect(); Statement statement = connection.createStatement()) {
            statement.execute(SCHEMA);

            ExecutorService pool = Executors.newFixedThreadPool(WORKERS);
            List<Future<List<Link>>> workers = new ArrayList<>();
            for (int worker = 1; worker <= WORKERS; worker++) {
                int number = worker;
                workers.add(pool.submit(() -> appendPayments(number)));
            }
            List<Link> appended = new ArrayList<>();
            for (Future<List<Link>> worker : workers) appended.addAll(worker.get());
            pool.shutdown();
            System.out.printf("appended %d records from %d concurrent connections%n", appended.size(), WORKERS);
            boolean held = chainsAreDenseAndLinked(appended) && appended.size() == WORKERS * APPENDS_PER_CHAIN * 2;

            try (PreparedStatement update = connection.prepareStatement(
                     "UPDATE payments SET amount = 0 WHERE account = ? AND seq = 1")) {
                update.setString(1, SHARED_CHAIN);
                update.executeUpdate();
                System.out.println("UPDATE was accepted: the ledger did not protect its records");
                held = false;
            } catch (SQLException refusal) {
                // pgjdbc's message: the server's severity and message, then DETAIL and HINT lines.
                String message = refusal.getMessage().lines().findFirst().orElse("");
                System.out.printf("UPDATE refused: SQLSTATE %s: %s%n", refusal.getSQLState(), message);
                held &= "23001".equals(refusal.getSQLState());
            }

            int problems = 0;
            try (ResultSet problem = statement.executeQuery("SELECT * FROM ledger.verify('payments')")) {
                while (problem.next()) {
                    problems++;
                    System.out.printf("  chain %s seq %s: %s %s%n", problem.getString(1), problem.getString(2),
                        problem.getString(3), problem.getString(4));
                }
            }
            System.out.printf("ledger.verify('payments'): %d problems%n", problems);
            return held && problems == 0;
        }
    }
}
