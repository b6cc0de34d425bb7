def test_smoke(db):
    assert db.scalar("select extversion from pg_extension where extname='ledger'") == '0.1.0'
    print(db.cluster.dir, db.cluster.port)
