# Sourced by scripts/test.sh: a throwaway PostgreSQL cluster for the tests of
# the PostgreSQL engine. `start_throwaway_postgres` installs Debian's
# PostgreSQL if there is none, starts a cluster of its own on 127.0.0.1 on a
# free port with its data, socket and log in a temporary folder, and exports
# SYNCGATE_TEST_DATABASE_URL (superuser `postgres`, trust authentication,
# reachable from 127.0.0.1 only) and SYNCGATE_REQUIRE_POSTGRES=1, so a
# PostgreSQL test fails rather than skips. `stop_throwaway_postgres` stops
# it and removes the folder; the caller runs it from an EXIT trap.
#
# The cluster speaks TLS too (`ssl = on`, plain connections still allowed),
# with a server certificate for `localhost` signed by a CA made for this
# cluster (openssl, installed if missing): it exports SYNCGATE_TEST_PG_CA (that
# CA's certificate), SYNCGATE_TEST_PG_OTHER_CA (a CA that signed nothing here),
# and SYNCGATE_TEST_PG_HOST_NAMES (the names the server certificate is valid
# for), for the tests of `sslmode` (tests/api/pg_tls.rs).
#
# It never touches a cluster Debian may have started (`main` on 5432).
# initdb and postgres refuse to run as root: as root they run as the
# `postgres` user (which the package creates) on a folder it owns.

throwaway_pg_dir=""
throwaway_pg_bin=""
throwaway_pg_as=()

# The newest /usr/lib/postgresql/NN/bin holding a server (by number: 9 < 15).
find_postgres_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -n -r); do
    if [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      printf '%s' "$dir"
      return
    fi
  done
}

# Run a PostgreSQL program as the cluster's owner, from the cluster's folder
# (the postgres user may not be allowed into the caller's).
as_cluster_owner() {
  (cd "$throwaway_pg_dir" && "${throwaway_pg_as[@]}" "$@")
}

# Certificates for the cluster's TLS in $throwaway_pg_dir/tls: a CA, the
# server's certificate for localhost signed by it (its key readable by the
# cluster's owner only, as postgres requires), and a second, unrelated CA.
# The CAs' keys are deleted once used: nothing else is ever signed.
make_throwaway_tls() {
  if ! command -v openssl >/dev/null 2>&1; then
    echo "== installing openssl (TLS for the throwaway PostgreSQL)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssl >/dev/null
  fi
  local tls="$throwaway_pg_dir/tls"
  mkdir -p "$tls"
  # A configuration of our own, so the system's openssl.cnf adds nothing.
  cat >"$tls/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = syncgate throwaway PostgreSQL
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256)
  {
    openssl req -x509 -config "$tls/openssl.cnf" -extensions ca "${ec[@]}" -days 7 \
      -subj "/CN=syncgate throwaway CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" &&
    openssl req -x509 -config "$tls/openssl.cnf" -extensions ca "${ec[@]}" -days 7 \
      -subj "/CN=syncgate unrelated CA" -keyout "$tls/other-ca.key" -out "$tls/other-ca.crt" &&
    openssl req -new -config "$tls/openssl.cnf" "${ec[@]}" \
      -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" &&
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
      -extfile "$tls/openssl.cnf" -extensions server -sha256 -days 7 -out "$tls/server.crt"
  } >"$tls/openssl.log" 2>&1 || { cat "$tls/openssl.log" >&2; return 1; }
  rm -f "$tls/ca.key" "$tls/other-ca.key" "$tls/server.csr" "$tls/ca.srl"
  chmod 600 "$tls/server.key"
  chmod 644 "$tls/ca.crt" "$tls/other-ca.crt" "$tls/server.crt"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$tls"
  fi
}

start_throwaway_postgres() {
  local started_at=$SECONDS
  throwaway_pg_bin="$(find_postgres_bin)"
  if [ -z "$throwaway_pg_bin" ]; then
    echo "== installing postgresql (tests of the PostgreSQL engine)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    throwaway_pg_bin="$(find_postgres_bin)"
    [ -n "$throwaway_pg_bin" ] || { echo "postgresql installed, but no server under /usr/lib/postgresql/*/bin" >&2; return 1; }
  fi

  if [ "$(id -u)" = 0 ]; then
    # /tmp, not $TMPDIR: the postgres user must be able to reach the folder.
    throwaway_pg_dir="$(mktemp -d /tmp/syncgate-pg.XXXXXX)"
    chown postgres: "$throwaway_pg_dir"
    throwaway_pg_as=(runuser -u postgres --)
  else
    throwaway_pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/syncgate-pg.XXXXXX")"
    throwaway_pg_as=()
  fi

  as_cluster_owner "$throwaway_pg_bin/initdb" -D "$throwaway_pg_dir/data" --username=postgres --auth=trust \
    --encoding=UTF8 --locale=C --no-sync >"$throwaway_pg_dir/initdb.log" 2>&1 \
    || { cat "$throwaway_pg_dir/initdb.log" >&2; return 1; }
  make_throwaway_tls || return 1
  # Throwaway data: nothing is worth an fsync. synchronous_commit stays on,
  # as syncgate requires it. TLS is offered, not required: initdb's
  # pg_hba.conf (`host`, trust) takes plain and encrypted connections alike.
  cat >>"$throwaway_pg_dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$throwaway_pg_dir'
fsync = off
full_page_writes = off
max_connections = 200
ssl = on
ssl_cert_file = '$throwaway_pg_dir/tls/server.crt'
ssl_key_file = '$throwaway_pg_dir/tls/server.key'
CONF

  # A free port: try a few random ones; postgres itself refuses one in use.
  local attempt port
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 40000))
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    if as_cluster_owner "$throwaway_pg_bin/pg_ctl" -D "$throwaway_pg_dir/data" -l "$throwaway_pg_dir/postgres.log" \
      -o "-p $port" -w -t 30 start >/dev/null; then
      export SYNCGATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
      export SYNCGATE_REQUIRE_POSTGRES=1
      export SYNCGATE_TEST_PG_CA="$throwaway_pg_dir/tls/ca.crt"
      export SYNCGATE_TEST_PG_OTHER_CA="$throwaway_pg_dir/tls/other-ca.crt"
      export SYNCGATE_TEST_PG_HOST_NAMES="localhost"
      echo "== PostgreSQL $("$throwaway_pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($throwaway_pg_dir), ready in $((SECONDS - started_at)) s"
      return 0
    fi
  done
  echo "could not start a throwaway PostgreSQL; its log:" >&2
  cat "$throwaway_pg_dir/postgres.log" >&2 || true
  return 1
}

stop_throwaway_postgres() {
  [ -n "$throwaway_pg_dir" ] || return 0
  if [ -f "$throwaway_pg_dir/data/postmaster.pid" ]; then
    as_cluster_owner "$throwaway_pg_bin/pg_ctl" -D "$throwaway_pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$throwaway_pg_dir"
  throwaway_pg_dir=""
  unset SYNCGATE_TEST_PG_CA SYNCGATE_TEST_PG_OTHER_CA SYNCGATE_TEST_PG_HOST_NAMES
}
