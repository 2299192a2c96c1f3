"""Fills a governance store (SQLite) with N-1 more keys, rate limits on each, for the governed
rows of benches/load.sh and benches/instructions.sh: `python3 gov_keys.py DB N`."""
import hashlib, os, sqlite3, sys, time

db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
now = int(time.time())
rows = []
for i in range(n - 1):
    secret = "sk-sy-bench-" + os.urandom(16).hex()
    rows.append((f"key_b{i:011d}", f"user{i % 500}", hashlib.sha256(secret.encode()).hexdigest(),
                 secret[:10], "", "", None, None, 600, 100000, None, now, None, now))
c.executemany("INSERT INTO sy_keys (id, user_name, key_sha256, prefix, models, providers, budget_micro_usd,"
              " period, rpm, tpm, expires_at, created_at, revoked_at, updated_at)"
              " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
c.execute("UPDATE sy_meta SET version = version + 1 WHERE name = 'keys'")
c.commit()
print(c.execute("SELECT COUNT(*) FROM sy_keys").fetchone()[0], file=sys.stderr)
