#!/bin/sh
# OVS-DPDK in a container on the host: ovsdb-server + ovs-vswitchd-dpdk, configured from
# a directory of Open_vSwitch other_config keys (the ConfigMap ovs-dpdk-config mounted
# as files: the file name is the key, its content the value).
#
#   ovs-dpdk.sh run     start both daemons, apply the config, create the bridge, wait;
#                       SIGTERM stops both (ports stay in the database for the restart)
#   ovs-dpdk.sh check   exit 0 when vswitchd answers, DPDK is initialised and the bridge exists
#
# Environment (defaults): OVS_RUNDIR (/run/openvswitch, shared with the agent through a
# hostPath), OVS_DBDIR (/var/lib/numanet/ovs), OVS_OTHER_CONFIG_DIR
# (/etc/ovs-dpdk/other_config), OVS_BRIDGE (br-numanet), OVS_VSWITCHD
# (/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk), OVS_SCHEMA.
set -eu

export OVS_RUNDIR=${OVS_RUNDIR:-/run/openvswitch}
export OVS_DBDIR=${OVS_DBDIR:-/var/lib/numanet/ovs}
CONF_DIR=${OVS_OTHER_CONFIG_DIR:-/etc/ovs-dpdk/other_config}
BRIDGE=${OVS_BRIDGE:-br-numanet}
VSWITCHD=${OVS_VSWITCHD:-/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk}
SCHEMA=${OVS_SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}
DB="$OVS_DBDIR/conf.db"
DB_SOCK="unix:$OVS_RUNDIR/db.sock"
VSCTL="ovs-vsctl --db=$DB_SOCK --timeout=30"
MANAGED_KEY=numanet-other-config-keys   # external_ids: the keys this script set last time

log() { echo "ovs-dpdk: $*" >&2; }

# ovs-vsctl parses VALUE as an OVSDB string: quote it so commas and spaces survive.
quote() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }

apply_other_config() {
    keys=""
    if [ -d "$CONF_DIR" ]; then
        for file in "$CONF_DIR"/*; do
            [ -f "$file" ] || continue
            key=$(basename "$file")
            case "$key" in
                *[!a-z0-9-]*|"") log "ignoring $file: other_config keys are lower-case words joined by '-'"; continue ;;
            esac
            value=$(cat "$file")
            $VSCTL --no-wait set Open_vSwitch . "other_config:$key=$(quote "$value")"
            log "other_config:$key=$value"
            keys="$keys $key"
        done
    fi
    # Keys set by an earlier version of the ConfigMap and gone from it now are removed.
    previous=$($VSCTL --no-wait --if-exists get Open_vSwitch . "external_ids:$MANAGED_KEY" 2>/dev/null | tr -d '"' || true)
    for old in $previous; do
        case " $keys " in *" $old "*) ;; *)
            $VSCTL --no-wait remove Open_vSwitch . other_config "$old"
            log "removed other_config:$old (no longer configured)" ;;
        esac
    done
    $VSCTL --no-wait set Open_vSwitch . "external_ids:$MANAGED_KEY=$(quote "$(echo $keys)")"
}

VSWITCHD_PID=
DB_PID=

# Runs on every exit of `run` (SIGTERM, a failed step, a dead daemon): never leaves a
# daemon behind. `exit` without --cleanup keeps the ports for the next start.
stop() {
    trap - EXIT TERM INT
    log "stopping (status $1)"
    if [ -n "$VSWITCHD_PID" ]; then
        ovs-appctl -t "$OVS_RUNDIR/ovs-vswitchd.ctl" exit >/dev/null 2>&1 \
            || kill "$VSWITCHD_PID" 2>/dev/null || true
        wait "$VSWITCHD_PID" 2>/dev/null || true
    fi
    if [ -n "$DB_PID" ]; then
        ovs-appctl -t "$OVS_RUNDIR/ovsdb-server.ctl" exit >/dev/null 2>&1 \
            || kill "$DB_PID" 2>/dev/null || true
        wait "$DB_PID" 2>/dev/null || true
    fi
    exit "$1"
}

run() {
    trap 'stop $?' EXIT
    trap 'exit 0' TERM INT
    mkdir -p "$OVS_RUNDIR" "$OVS_DBDIR"
    if [ ! -e "$DB" ]; then
        ovsdb-tool create "$DB" "$SCHEMA"
        log "created $DB"
    elif [ "$(ovsdb-tool needs-conversion "$DB" "$SCHEMA")" = yes ]; then
        ovsdb-tool convert "$DB" "$SCHEMA"
        log "converted $DB to the schema of this OVS"
    fi
    # Foreground daemons as children of this script: their logs go to the container log.
    ovsdb-server "$DB" --remote="punix:$OVS_RUNDIR/db.sock" \
        --pidfile="$OVS_RUNDIR/ovsdb-server.pid" --unixctl="$OVS_RUNDIR/ovsdb-server.ctl" \
        -vconsole:info -vsyslog:off &
    DB_PID=$!
    # The socket appears a moment after the server starts: --retry waits for it.
    $VSCTL --retry --no-wait init
    apply_other_config
    "$VSWITCHD" "$DB_SOCK" --pidfile="$OVS_RUNDIR/ovs-vswitchd.pid" \
        --unixctl="$OVS_RUNDIR/ovs-vswitchd.ctl" -vconsole:info -vsyslog:off &
    VSWITCHD_PID=$!
    # Its control socket answers once it runs; a vswitchd that fails to start exits first.
    until ovs-appctl -t "$OVS_RUNDIR/ovs-vswitchd.ctl" version >/dev/null 2>&1; do
        kill -0 "$VSWITCHD_PID" 2>/dev/null || { log "ovs-vswitchd exited while starting"; exit 1; }
        sleep 0.2
    done
    # Waits for vswitchd to apply it, so DPDK is up when this returns.
    $VSCTL --may-exist add-br "$BRIDGE" -- set bridge "$BRIDGE" datapath_type=netdev
    log "ready: bridge $BRIDGE, database $DB_SOCK"
    # Either daemon dying ends the container, so the kubelet restarts it.
    while kill -0 "$VSWITCHD_PID" 2>/dev/null && kill -0 "$DB_PID" 2>/dev/null; do
        sleep 1 &
        wait $! || true
    done
    log "a daemon exited unexpectedly"
    exit 1
}

check() {
    ovs-appctl -t "$OVS_RUNDIR/ovs-vswitchd.ctl" version >/dev/null
    [ "$($VSCTL --timeout=5 get Open_vSwitch . dpdk_initialized)" = true ] || {
        log "DPDK is not initialised"; exit 1; }
    $VSCTL --timeout=5 br-exists "$BRIDGE" || { log "bridge $BRIDGE is missing"; exit 1; }
    # A bridge whose datapath failed to open stays in the database with ofport -1.
    ofport=$($VSCTL --timeout=5 get Interface "$BRIDGE" ofport)
    [ "$ofport" = 65534 ] || { log "bridge $BRIDGE has no datapath (ofport $ofport): see the log"; exit 1; }
}

case "${1:-run}" in
    run) run ;;
    check) check ;;
    *) echo "usage: ovs-dpdk.sh run|check" >&2; exit 2 ;;
esac
