#!/usr/bin/env bash
# A whole running Cinder on this machine with Ember's driver behind two backends:
# RabbitMQ, Glance (gunicorn), tgtd, cinder-api, cinder-scheduler and cinder-volume,
# all on 127.0.0.1, sqlite, noauth. Everything lives in build/cinder-stack/.
#
#   scripts/cinder-stack.sh up       install what is missing, start what is not running, wait
#                                    until both backends are up, write build/cinder-stack/env
#   scripts/cinder-stack.sh down     stop every process it started (by PID), remove the VG,
#                                    the loop devices and the stack's data (the venv stays)
#   scripts/cinder-stack.sh status   what runs, on which port; exit 0 only when all of it runs
#   scripts/cinder-stack.sh install  only the installation step of `up` (apt, venv, driver)
#
# `up` on a running stack starts only what is not running, with the same ports and data: kill
# cinder-volume and tgtd and run `up` again to restart them (cinder-volume then re-exports
# every volume through ensure_export).
# Backends: ember-file (ember_backend = file) and ember-lvm (ember_backend = lvm, a VG over two
# sparse loop-device PVs with a private LVM_SYSTEM_DIR, activation = 0), each with a volume type
# of the same name. EMBER_BIN=/abs/ember uses that binary instead of building the repo's own.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=$ROOT/build/cinder-stack
VENV=$S/venv
PY_REQS=(cinder==29.0.0 glance==33.0.0 python-cinderclient python-glanceclient gunicorn)
APT_PKGS=(rabbitmq-server lvm2 tgt libiscsi-bin libiscsi-dev gcc libc6-dev qemu-utils util-linux iproute2 curl)
PV_COUNT=2
PV_GIB=${EMBER_STACK_PV_GIB:-10}
HOSTNAME_CINDER=ember-stack
BACKENDS=(ember-file ember-lvm)
# Start order; `down` goes backwards.
SERVICES=(epmd rabbitmq glance tgtd cinder-api cinder-scheduler cinder-volume)

log() { printf 'cinder-stack: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------- installation

install_apt() {
  local missing=() p
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # --no-install-recommends: no policy-rc.d dance needed, nothing is started by the package.
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_venv() {
  local want="${PY_REQS[*]}"
  if [ ! -x "$VENV/bin/cinder-volume" ] || [ "$(cat "$VENV/.ember-stack-reqs" 2>/dev/null)" != "$want" ]; then
    log "pip: installing ${PY_REQS[*]} into $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${PY_REQS[@]}"
    printf '%s' "$want" >"$VENV/.ember-stack-reqs"
  fi
  [ -f "$ROOT/drivers/cinder/pyproject.toml" ] || [ -f "$ROOT/drivers/cinder/setup.py" ] ||
    die "no Cinder driver package in $ROOT/drivers/cinder"
  # Local folders (the driver; the sqlite plugin of the services' databases): reinstalled
  # every time so the services run them as they are now. Neither has dependencies.
  "$VENV/bin/pip" install -q --no-deps --force-reinstall "$ROOT/drivers/cinder" "$ROOT/scripts/stack-sqlite"
}

ember_binary() {
  if [ -n "${EMBER_BIN:-}" ]; then
    [ -x "$EMBER_BIN" ] || die "EMBER_BIN=$EMBER_BIN is not executable"
    case $EMBER_BIN in /*) ;; *) die "EMBER_BIN must be an absolute path" ;; esac
    printf '%s\n' "$EMBER_BIN"
    return
  fi
  (cd "$ROOT" && cargo build --release --quiet --bin ember) >&2
  printf '%s\n' "$ROOT/build/release/ember"
}

# ---------------------------------------------------------------- processes

pidfile() { printf '%s/pids/%s.pid\n' "$S" "$1"; }

# The pid of a running service (its pid file names a live process whose command line still
# looks like that service, so a reused pid is never taken for ours), else nothing.
service_pid() {
  local f pid pat
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  case $1 in
    epmd) pat=epmd ;;
    rabbitmq) pat=rabbitmq-server ;;
    glance) pat=gunicorn ;;
    tgtd) pat=tgtd ;;
    *) pat=$1 ;;
  esac
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pat" || return 1
  # A zombie is not running.
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  printf '%s\n' "$pid"
}

# Starts "$@" as the leader of its own session (so `down` can stop it and every child it forks
# by its process group), output to logs/NAME.out, pid to pids/NAME.pid.
spawn() {
  local name=$1
  shift
  # Without job control a background job stays in our process group, so setsid does not fork
  # and $! is the pid of the new session's leader.
  setsid "$@" </dev/null >>"$S/logs/$name.out" 2>&1 &
  printf '%s\n' "$!" >"$(pidfile "$name")"
  log "started $name (pid $!)"
}

wait_for() {
  local what=$1 secs=$2 name=$3
  shift 3
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    # Right after spawn the pid may still be our forked shell, not yet the service: pid only.
    if ! kill -0 "$(cat "$(pidfile "$name")")" 2>/dev/null; then
      tail -n 30 "$S/logs/$name.out" >&2 || true
      die "$name exited while waiting for $what (logs in $S/logs)"
    fi
    [ $SECONDS -lt $end ] || die "timed out after ${secs}s waiting for $what (logs in $S/logs)"
    sleep 1
  done
}

# Stops a service by its pid file: TERM to its process group, then KILL after a grace time.
stop_service() {
  local name=$1 pid i
  pid=$(service_pid "$name") || {
    rm -f "$(pidfile "$name")"
    return 0
  }
  local grace=100
  if [ "$name" = tgtd ]; then
    # tgtd ignores TERM; asked through its control port it exits (KILL if sessions hold it).
    tgtadm -C "$TGT_CONTROL_PORT" --op delete --mode system >/dev/null 2>&1 || true
    grace=25
  elif [ "$name" = rabbitmq ]; then
    # Gracefully: RabbitMQ flushes and stops its node.
    env "${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl -q stop >/dev/null 2>&1 ||
      kill -TERM -- "-$pid" 2>/dev/null || true
  else
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  fi
  for i in $(seq 1 $grace); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    log "$name (pid $pid) did not stop: killing its process group"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$name")"
  log "stopped $name (pid $pid)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- state

# Ports, VG and loop devices are chosen once per `up` from scratch and kept in state.env until
# `down`, so a later `up` restarts a dead service exactly where it was.
new_state() {
  local cport
  while :; do
    # tgtd takes control ports up to 32767 only.
    cport=$((20000 + RANDOM % 12000))
    [ -e "/var/run/tgtd/socket.$cport" ] || break
  done
  cat >"$S/state.env" <<EOF
EPMD_PORT=$(free_port)
AMQP_PORT=$(free_port)
DIST_PORT=$(free_port)
GLANCE_PORT=$(free_port)
API_PORT=$(free_port)
ISCSI_PORT=$(free_port)
TGT_CONTROL_PORT=$cport
VG=ember-stack-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
EMBER=$1
EOF
}

lvm_env() { env LVM_SYSTEM_DIR="$S/lvm/etc" LC_ALL=C LVM_SUPPRESS_FD_WARNINGS=1 "$@"; }

# Loop devices whose backing file lies in this stack's folder (ours, whoever attached them).
our_loops() {
  local b dev
  for b in /sys/block/loop*/loop/backing_file; do
    [ -r "$b" ] || continue
    case $(cat "$b") in "$S"/*)
      dev=${b#/sys/block/}
      printf '/dev/%s\n' "${dev%%/*}"
      ;;
    esac
  done
}

setup_vg() {
  if lvm_env vgs "$VG" >/dev/null 2>&1; then
    return 0
  fi
  mkdir -p "$S/lvm/etc" "$S/lvm/lock"
  local i img loops=() dev
  for i in $(seq 0 $((PV_COUNT - 1))); do
    img=$S/lvm/pv$i.img
    [ -f "$img" ] || truncate -s "${PV_GIB}G" "$img"
    dev=$(losetup -j "$img" | cut -d: -f1 | head -n1)
    [ -n "$dev" ] || dev=$(losetup -f --show "$img")
    loops+=("$dev")
  done
  local filter="" l
  for l in "${loops[@]}"; do filter+="\"a|^$l\$|\", "; done
  cat >"$S/lvm/etc/lvm.conf" <<EOF
devices { filter = [ ${filter}"r|.*|" ] obtain_device_list_from_udev = 0 }
activation { udev_sync = 0 udev_rules = 0 }
global { activation = 0 locking_dir = "$S/lvm/lock" }
EOF
  for l in "${loops[@]}"; do lvm_env pvcreate -q "$l" >/dev/null; done
  lvm_env vgcreate -q "$VG" "${loops[@]}" >/dev/null
  log "VG $VG on ${loops[*]}"
}

# ---------------------------------------------------------------- configuration

# The services' sqlite URL: cinder-api, cinder-scheduler and the two cinder-volume backends
# share one file (Glance's threads another). scripts/stack-sqlite (a SQLAlchemy plugin) puts
# it in WAL mode and starts every transaction with BEGIN IMMEDIATE, so a transaction that
# reads before it writes (most of Cinder's) queues for the write lock, up to `timeout`
# seconds, instead of failing at once with "database is locked" (see the plugin's doc).
db_url() { printf 'sqlite:///%s?plugin=ember_stack_sqlite&timeout=60\n' "$1"; }

write_configs() {
  mkdir -p "$S"/{bin,clients,etc/cinder,etc/glance,data/cinder/conversion,data/cinder/locks} \
    "$S"/data/glance/{images,staging,tasks} "$S"/data/ember-file "$S"/rabbitmq/mnesia
  # Cinder always runs `sudo cinder-rootwrap CONF CMD...`; there is no sudo here and the stack
  # runs as root, so the services' PATH gets a sudo that drops its options and execs the rest.
  cat >"$S/bin/sudo" <<'EOF'
#!/bin/sh
while [ $# -gt 0 ]; do
  case $1 in --) shift; break ;; -*) shift ;; *) break ;; esac
done
exec "$@"
EOF
  chmod +x "$S/bin/sudo"
  ln -sf "$VENV/bin/cinder" "$S/clients/cinder"
  # glanceclient fails on OS_AUTH_TYPE=noauth (which cinderclient needs): its wrapper drops it
  # and so uses OS_IMAGE_URL + OS_AUTH_TOKEN, no keystone.
  rm -f "$S/clients/glance"
  printf '#!/bin/sh\nunset OS_AUTH_TYPE\nexec "%s" "$@"\n' "$VENV/bin/glance" >"$S/clients/glance"
  chmod +x "$S/clients/glance"

  printf '[].\n' >"$S/rabbitmq/enabled_plugins"
  : >"$S/rabbitmq/rabbitmq-env.conf"
  cat >"$S/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
EOF

  local gl=$S/etc/glance
  cat >"$gl/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $GLANCE_PORT
enabled_backends = fs:file
log_file = $S/logs/glance-api.log
[database]
connection = $(db_url "$S/data/glance/glance.sqlite")
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $S/data/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $S/data/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $S/data/glance/tasks
[paste_deploy]
config_file = $VENV/etc/glance/glance-api-paste.ini
flavor =
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
policy_file = $gl/policy.yaml
EOF
  printf '{}\n' >"$gl/policy.yaml"

  local c=$S/etc/cinder ember_dir
  ember_dir=$(dirname "$EMBER")
  cat >"$c/rootwrap.conf" <<EOF
[DEFAULT]
filters_path = $VENV/etc/cinder/rootwrap.d,$ROOT/drivers/cinder/etc/cinder/rootwrap.d
exec_dirs = $ember_dir,$VENV/bin,/usr/local/sbin,/usr/local/bin,/usr/sbin,/usr/bin,/sbin,/bin
use_syslog = False
EOF
  cat >"$c/ember-file.toml" <<EOF
[target]
control_port = $TGT_CONTROL_PORT
EOF
  cat >"$c/ember-lvm.toml" <<EOF
lvm_conf_file = "$S/lvm/etc/lvm.conf"
[target]
control_port = $TGT_CONTROL_PORT
EOF
  cat >"$c/cinder.conf" <<EOF
[DEFAULT]
debug = true
auth_strategy = noauth
transport_url = rabbit://guest:guest@127.0.0.1:$AMQP_PORT/
enabled_backends = $(
    IFS=,
    echo "${BACKENDS[*]}"
  )
host = $HOSTNAME_CINDER
my_ip = 127.0.0.1
state_path = $S/data/cinder
log_dir = $S/logs
api_paste_config = $VENV/etc/cinder/api-paste.ini
resource_query_filters_file = $VENV/etc/cinder/resource_filters.json
rootwrap_config = $c/rootwrap.conf
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = $API_PORT
osapi_volume_workers = 1
glance_api_servers = http://127.0.0.1:$GLANCE_PORT
image_conversion_dir = $S/data/cinder/conversion
periodic_interval = 10
[database]
connection = $(db_url "$S/data/cinder/cinder.sqlite")
[oslo_concurrency]
lock_path = $S/data/cinder/locks

[ember-file]
volume_driver = ember_cinder.driver.EmberVolumeDriver
volume_backend_name = ember-file
ember_backend = file
ember_data_dir = $S/data/ember-file
ember_binary = $EMBER
ember_config = $c/ember-file.toml
ember_connection = iscsi
target_helper = tgtadm
target_ip_address = 127.0.0.1
target_port = $ISCSI_PORT
use_chap_auth = true
volume_clear = zero
image_conversion_dir = $S/data/cinder/conversion

[ember-lvm]
volume_driver = ember_cinder.driver.EmberVolumeDriver
volume_backend_name = ember-lvm
ember_backend = lvm
ember_volume_group = $VG
ember_binary = $EMBER
ember_config = $c/ember-lvm.toml
ember_connection = iscsi
target_helper = tgtadm
target_ip_address = 127.0.0.1
target_port = $ISCSI_PORT
use_chap_auth = true
volume_clear = zero
image_conversion_dir = $S/data/cinder/conversion
EOF

  cat >"$S/env" <<EOF
# source me: the cinder and glance clients of the Ember Cinder stack (noauth, no keystone)
export OS_AUTH_TYPE=noauth
export CINDER_ENDPOINT=http://127.0.0.1:$API_PORT/v3
export OS_PROJECT_ID=admin
export OS_USER_ID=admin
export OS_VOLUME_API_VERSION=3.70
export OS_IMAGE_URL=http://127.0.0.1:$GLANCE_PORT
export OS_IMAGE_API_VERSION=2
export OS_AUTH_TOKEN=ember-stack
export PATH=$S/clients:\$PATH
EOF
}

# ---------------------------------------------------------------- services

# Environments as arrays for `env`, so setsid can exec them (it cannot run shell functions).
set_envs() {
  SVC_ENV=(PATH="$S/bin:$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    HOME="$S/rabbitmq")
  RABBIT_ENV=(HOME="$S/rabbitmq" ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$EPMD_PORT"
    RABBITMQ_NODENAME=ember-stack@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT="$DIST_PORT"
    RABBITMQ_BASE="$S/rabbitmq" RABBITMQ_MNESIA_BASE="$S/rabbitmq/mnesia"
    RABBITMQ_LOG_BASE="$S/logs/rabbitmq" RABBITMQ_CONFIG_FILE="$S/rabbitmq/rabbitmq"
    RABBITMQ_ENABLED_PLUGINS_FILE="$S/rabbitmq/enabled_plugins"
    RABBITMQ_CONF_ENV_FILE="$S/rabbitmq/rabbitmq-env.conf"
    RABBITMQ_PID_FILE="$S/rabbitmq/beam.pid"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
}

tgtadm_ok() { tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi --op show --mode target; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_ok() { curl -sf -o /dev/null --max-time 5 "$1"; }
cinder_cli() {
  (
    # shellcheck source=/dev/null
    . "$S/env"
    "$VENV/bin/cinder" "$@"
  )
}

start_service() {
  local name=$1
  service_pid "$name" >/dev/null && return 0
  case $name in
    epmd)
      spawn epmd epmd -address 127.0.0.1 -port "$EPMD_PORT"
      wait_for "epmd" 20 epmd port_open "$EPMD_PORT"
      ;;
    rabbitmq)
      spawn rabbitmq env "${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
      wait_for "RabbitMQ" 90 rabbitmq env "${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl -q status
      ;;
    glance)
      [ -f "$S/data/glance/glance.sqlite" ] ||
        "$VENV/bin/glance-manage" --config-file "$S/etc/glance/glance-api.conf" db_sync \
          >>"$S/logs/glance-manage.out" 2>&1
      spawn glance env "${SVC_ENV[@]}" OS_GLANCE_CONFIG_DIR="$S/etc/glance" "$VENV/bin/gunicorn" \
        -w 1 --threads 4 -b "127.0.0.1:$GLANCE_PORT" glance.wsgi.api:application
      wait_for "Glance" 90 glance http_ok "http://127.0.0.1:$GLANCE_PORT/healthcheck"
      ;;
    tgtd)
      # A private tgtd: its own portal and control port; stale sockets of a killed one go first.
      rm -f "/var/run/tgtd/socket.$TGT_CONTROL_PORT" "/var/run/tgtd/socket.$TGT_CONTROL_PORT.lock"
      spawn tgtd tgtd -f --iscsi "portal=127.0.0.1:$ISCSI_PORT" -C "$TGT_CONTROL_PORT"
      wait_for "tgtd" 30 tgtd tgtadm_ok
      ;;
    cinder-api)
      if [ ! -f "$S/data/cinder/cinder.sqlite" ]; then
        env "${SVC_ENV[@]}" "$VENV/bin/cinder-manage" --config-file "$S/etc/cinder/cinder.conf" db sync \
          >>"$S/logs/cinder-manage.out" 2>&1
      fi
      spawn cinder-api env "${SVC_ENV[@]}" "$VENV/bin/cinder-api" --config-file "$S/etc/cinder/cinder.conf"
      wait_for "cinder-api" 90 cinder-api http_ok "http://127.0.0.1:$API_PORT/"
      ;;
    cinder-scheduler | cinder-volume)
      spawn "$name" env "${SVC_ENV[@]}" "$VENV/bin/$name" --config-file "$S/etc/cinder/cinder.conf"
      ;;
  esac
}

backends_up() {
  local out b
  # Microversion 3.0: from 3.49 on, service-list asks every cinder-volume for its backend
  # state over RPC, which times out (60 s) while a volume service is still starting.
  out=$(cinder_cli --os-volume-api-version 3.0 service-list) || return 1
  grep -E '\| *cinder-scheduler *\|' <<<"$out" | grep -q '| *enabled *| *up *|' || return 1
  for b in "${BACKENDS[@]}"; do
    grep -E "\| *$HOSTNAME_CINDER@$b *\|" <<<"$out" | grep -q '| *enabled *| *up *|' || return 1
  done
  # The scheduler places volumes only once it has each backend's capabilities. (Not asked with
  # `cinder get-pools`: an RPC call that reaches a scheduler still starting up times out after
  # 60 s.) Its debug log names every update it receives.
  for b in "${BACKENDS[@]}"; do
    grep -q "Received volume service update from  *$HOSTNAME_CINDER@$b:" \
      "$S/logs/cinder-scheduler.log" 2>/dev/null || return 1
  done
}

ensure_types() {
  local b
  for b in "${BACKENDS[@]}"; do
    # Only a new type gets its key: Cinder refuses to change a type that volumes use.
    cinder_cli type-show "$b" >/dev/null 2>&1 && continue
    cinder_cli type-create "$b" >/dev/null
    cinder_cli type-key "$b" set "volume_backend_name=$b" >/dev/null
  done
}

load_state() {
  # shellcheck source=/dev/null
  . "$S/state.env"
  set_envs
}

cmd_install() {
  [ "$(id -u)" -eq 0 ] || die "needs root (loop devices, lvm2, tgtd)"
  install_apt
  install_venv
}

cmd_up() {
  cmd_install
  mkdir -p "$S/pids" "$S/logs"
  local ember
  ember=$(ember_binary)
  if [ ! -f "$S/state.env" ]; then
    # A fresh stack: keep the previous run's logs one generation.
    rm -rf "$S/logs.prev"
    mv "$S/logs" "$S/logs.prev"
    mkdir -p "$S/logs"
    new_state "$ember"
  fi
  load_state
  [ "$EMBER" = "$ember" ] || die "the running stack uses $EMBER; run down first to switch to $ember"
  setup_vg
  write_configs
  local s
  for s in "${SERVICES[@]}"; do start_service "$s"; done
  local end=$((SECONDS + 180))
  until backends_up; do
    for s in cinder-scheduler cinder-volume; do
      service_pid "$s" >/dev/null || {
        tail -n 30 "$S/logs/$s.out" >&2 || true
        die "$s exited (logs in $S/logs)"
      }
    done
    [ $SECONDS -lt $end ] || die "backends not up after 180s (logs in $S/logs)"
    sleep 2
  done
  ensure_types
  log "up: source $S/env"
}

cmd_down() {
  [ -f "$S/state.env" ] && load_state
  # Backwards: the Cinder services go while RabbitMQ still runs (without it their shutdown
  # waits in AMQP reconnect loops until killed).
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_service "${SERVICES[i]}"; done
  if [ -n "${TGT_CONTROL_PORT:-}" ]; then
    rm -f "/var/run/tgtd/socket.$TGT_CONTROL_PORT" "/var/run/tgtd/socket.$TGT_CONTROL_PORT.lock"
  fi
  if [ -n "${VG:-}" ] && [ -f "$S/lvm/etc/lvm.conf" ]; then
    lvm_env vgremove -q -f "$VG" >/dev/null 2>&1 || true
  fi
  local l
  for l in $(our_loops); do
    [ -f "$S/lvm/etc/lvm.conf" ] && lvm_env pvremove -q -ff -y "$l" >/dev/null 2>&1 || true
    losetup -d "$l" && log "detached $l"
  done
  rm -rf "$S/data" "$S/lvm" "$S/etc" "$S/rabbitmq" "$S/bin" "$S/clients" "$S/env" "$S/state.env"
  log "down"
}

cmd_status() {
  if [ ! -f "$S/state.env" ]; then
    echo "cinder-stack: not up"
    return 3
  fi
  load_state
  local s pid rc=0
  for s in "${SERVICES[@]}"; do
    if pid=$(service_pid "$s"); then
      printf '%-17s running  pid %s\n' "$s" "$pid"
    else
      printf '%-17s stopped\n' "$s"
      rc=1
    fi
  done
  printf 'ports: amqp %s glance %s cinder-api %s iscsi %s tgt-control %s; VG %s; loops %s\n' \
    "$AMQP_PORT" "$GLANCE_PORT" "$API_PORT" "$ISCSI_PORT" "$TGT_CONTROL_PORT" "$VG" \
    "$(our_loops | tr '\n' ' ')"
  if service_pid cinder-api >/dev/null; then
    cinder_cli service-list || rc=1
  fi
  return $rc
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  install) cmd_install ;;
  *)
    echo "usage: $0 up|down|status|install" >&2
    exit 2
    ;;
esac
