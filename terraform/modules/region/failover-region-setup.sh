#!/bin/bash
# Makes this host a failover region: PostgreSQL with TLS, the controller's role and the
# service databases, the failover wheel and its systemd unit, the secrets, the topology
# and the failover schema; then (re)starts the controller.
#
# cloud-init runs it at first boot (terraform/modules/region). Every step checks before
# it acts, so it is safe to run again: after another region was rebuilt (its address
# changed: this fetches the topology again), or to install a newer wheel from the same URL.
#
# Its settings are names, never secrets: /etc/failover/region-setup.env, written by
# cloud-init. The secrets come from SSM Parameter Store here, at boot, so that they are
# in neither the user data nor the Terraform state.
set -euo pipefail
# shellcheck source=/dev/null
. /etc/failover/region-setup.env

readonly pgdata=/var/lib/pgsql/data
readonly tls_dir=/var/lib/pgsql/tls
# The CA that signed the regions' certificates: the controller reads this copy, each
# subscription (a connection this host's server makes) the one in $tls_dir.
readonly controller_ca=/etc/failover/postgres-ca.crt
readonly venv=/opt/failover
readonly topology=/etc/failover/topology
# Terraform writes the topology parameter only once every region's host exists.
readonly topology_wait_seconds=3600

log() { echo "failover-region-setup: $*" >&2; }

# An SSM parameter's value, decrypted. Only ever assigned to a variable or written to a
# file: on a command line, any local user could read it.
parameter() {
  aws ssm get-parameter --region "$AWS_REGION_NAME" --with-decryption --name "$1" \
    --query Parameter.Value --output text
}

# NAME="VALUE" as a systemd EnvironmentFile reads it: inside double quotes, systemd
# unescapes \\, \", \` and \$, and a value cannot span lines.
env_line() {
  local value=$2
  if [[ $value == *$'\n'* ]]; then
    log "the value of $1 holds a line break, which an environment file cannot carry"
    return 1
  fi
  value=${value//\\/\\\\}
  value=${value//\"/\\\"}
  value=${value//\`/\\\`}
  value=${value//\$/\\\$}
  printf '%s="%s"\n' "$1" "$value"
}

# Keeps the environment (FAILOVER_ROLE_PASSWORD for psql), not necessarily PATH: callers
# name what they run by its full path or as installed in the system's own folders.
as_postgres() { runuser -u postgres -- "$@"; }

postgres_with_tls() {
  [ -f "$pgdata/PG_VERSION" ] || postgresql-setup --initdb
  install -m 0600 -o postgres -g postgres /etc/failover/pg_hba.conf "$pgdata/pg_hba.conf"
  local include="include '/etc/failover/postgresql.conf'"
  grep -qxF "$include" "$pgdata/postgresql.conf" || echo "$include" >>"$pgdata/postgresql.conf"
  install -d -m 0700 -o postgres -g postgres "$tls_dir"
  (
    umask 077
    parameter "$TLS_CERTIFICATE_PARAMETER" >"$tls_dir/server.crt"
    parameter "$TLS_KEY_PARAMETER" >"$tls_dir/server.key"
  )
  chown postgres:postgres "$tls_dir/server.crt" "$tls_dir/server.key"
  if [ -n "$TLS_CA_PARAMETER" ]; then
    parameter "$TLS_CA_PARAMETER" >"$controller_ca.new"
    chmod 0644 "$controller_ca.new"
    mv "$controller_ca.new" "$controller_ca"
    install -m 0644 -o postgres -g postgres "$controller_ca" "$tls_dir/ca.crt"
  fi
  systemctl enable --now postgresql
  systemctl reload postgresql # a rerun's new certificate or rules
}

controller_role_and_databases() {
  FAILOVER_ROLE_PASSWORD=$(parameter "$PASSWORD_PARAMETER")
  export FAILOVER_ROLE_PASSWORD # read by psql's \getenv: never on a command line
  as_postgres psql -v ON_ERROR_STOP=1 -v role="$CONTROLLER_ROLE" \
    -f /etc/failover/postgres/controller-role.sql
  unset FAILOVER_ROLE_PASSWORD
  local database
  for database in $DATABASES; do
    as_postgres psql -v ON_ERROR_STOP=1 -v role="$CONTROLLER_ROLE" -v database="$database" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SQL
  done
}

failover_wheel() {
  local wheel
  wheel=/var/cache/failover/$(basename "$WHEEL_URL") # pip reads the version from the name
  install -d -m 0755 /var/cache/failover
  case $WHEEL_URL in
    s3://*) aws s3 cp --only-show-errors --region "$AWS_REGION_NAME" "$WHEEL_URL" "$wheel" ;;
    *) curl --fail --silent --show-error --location --proto =https --proto-redir =https \
      --retry 5 --output "$wheel" "$WHEEL_URL" ;;
  esac
  [ -x "$venv/bin/python" ] || python3.11 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade "$wheel"
  ln -sfn "$venv/bin/failover" /usr/local/bin/failover # the unit's ExecStart
}

# The unit the wheel ships: its User, EnvironmentFile and ExecStart are what the rest of
# this script provides.
controller_unit() {
  id -u failover >/dev/null 2>&1 ||
    useradd --system --home-dir /var/lib/failover --shell /usr/sbin/nologin failover
  local unit
  unit=$("$venv/bin/python" -c 'import failover, pathlib
print(pathlib.Path(failover.__file__).parent / "systemd" / "failover-controller.service")')
  install -m 0644 "$unit" /etc/systemd/system/failover-controller.service
  systemctl daemon-reload
}

# /etc/failover/failover.env, the unit's EnvironmentFile: the region, and the variables
# the topology names for its secrets (`failover topology from-terraform` defaults).
controller_environment() {
  local password key
  password=$(parameter "$PASSWORD_PARAMETER")
  key=$(parameter "$FLEET_KEY_PARAMETER")
  install -m 0640 -o root -g failover /dev/null /etc/failover/failover.env.new
  {
    env_line FAILOVER_REGION "$REGION_NAME"
    env_line FAILOVER_PG_PASSWORD "$password"
    env_line FAILOVER_FLEET_KEY "$key"
  } >/etc/failover/failover.env.new
  mv /etc/failover/failover.env.new /etc/failover/failover.env
}

# The topology parameter holds the fleet's Terraform outputs; the topology is written from
# them here, by the same code as `failover topology from-terraform` on an operator's machine.
controller_topology() {
  local outputs deadline=$((SECONDS + topology_wait_seconds))
  until outputs=$(parameter "$TOPOLOGY_PARAMETER" 2>&1); do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "gave up after ${topology_wait_seconds} s waiting for $TOPOLOGY_PARAMETER: $outputs"
      return 1
    fi
    log "waiting for $TOPOLOGY_PARAMETER, written once every region's host exists: $outputs"
    sleep 20
  done
  printf '%s\n' "$outputs" >/etc/failover/terraform-outputs.json
  local tls=(--sslmode "$POSTGRES_SSLMODE")
  if [ "$POSTGRES_SSLMODE" != require ]; then
    tls+=(--sslrootcert "$controller_ca" --subscription-sslrootcert "$tls_dir/ca.crt")
  fi
  "$venv/bin/failover" topology from-terraform \
    --outputs-file /etc/failover/terraform-outputs.json --out "$topology" --yes "${tls[@]}"
}

# The schema installs as the local superuser (its event trigger needs one); then the
# controller's role gets what it needs in each database (controller-grants.sql).
failover_schema() {
  as_postgres "$venv/bin/failover" db install --topology "$topology" --region "$REGION_NAME" \
    --socket-dir /run/postgresql --yes
  local database
  for database in $DATABASES; do
    as_postgres psql -v ON_ERROR_STOP=1 -v role="$CONTROLLER_ROLE" -d "$database" \
      -f /etc/failover/postgres/controller-grants.sql
  done
}

cd / # runuser keeps the working folder, which postgres may not be allowed to read
postgres_with_tls
controller_role_and_databases
failover_wheel
controller_unit
controller_environment
controller_topology
failover_schema
systemctl enable failover-controller
systemctl restart failover-controller # a rerun's new topology, secrets or wheel
log "region $REGION_NAME is set up; the controller runs (journalctl -u failover-controller)"
