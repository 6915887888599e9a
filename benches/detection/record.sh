#!/usr/bin/env bash
# Records real VNC sessions for the detection bench and the bundled samples: TigerVNC Xvnc and
# x11vnc servers in one network namespace, each client in a namespace of its own (one address
# per client, so a label can name a session by its capture file and client address), joined by
# a bridge. Nothing has a default route, so no packet leaves the namespaces.
#
# Usage: benches/detection/record.sh samples DIR   normal sessions only, merged into one capture
#        benches/detection/record.sh bench DIR     normal, attack and insider sessions, one capture
#                                                  per scenario, moved in time, and DIR/labels.tsv
#
# DETECTION_SAMPLE_SESSIONS (samples, default 32) records fewer sessions for a trial;
# DETECTION_RESCHEDULE=1 (bench) only moves the last recording's captures into DIR again.
#
# Needs root (namespaces, tcpdump). Installs what it lacks from Debian (TigerVNC, x11vnc, Xvfb,
# xdotool, xclip, tcpdump, editcap, the attack tools) and vncdotool into a venv. Every client runs
# under `timeout`; the whole script under a hard cap. Cleanup stops only the processes this script
# started (by PID and start time) and deletes only its namespaces.
set -uo pipefail
umask 022

set_name=${1:-}
out=${2:-}
case $set_name in samples | bench) ;; *)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
[ -n "$out" ] || { echo "usage: $0 samples|bench DIR" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces, tcpdump)" >&2; exit 1; }
if [ -z "${DETECTION_RECORD_BOUNDED:-}" ]; then
    export DETECTION_RECORD_BOUNDED=1
    # 25 minutes: the bench set takes about 12 on a busy 2-core machine.
    exec timeout -k 20 1500 bash "$0" "$@"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="${DETECTION_WORK:-/tmp/vncguard-detection-$set_name}"
run="$work/run"
pids="$work/pids"
venv="${VNCDOTOOL_VENV:-$HOME/.cache/vncguard/venv}"
# vncdo with the framebuffer encoding from VNCDO_ENCODING (vncdotool's own default is Raw, which
# makes every full update of a 1024x640 desktop 2.6 MB; Hextile keeps the recordings small, and
# vncdotool 1.4.2 fails decoding ZRLE).
vncdo="$work/vncdo"
write_vncdo() {
    cat >"$vncdo" <<EOF
#!$venv/bin/python
import os, sys
from vncdotool import client, command, rfb
client.VNCDoToolClient.encoding = getattr(rfb.Encoding, os.environ.get("VNCDO_ENCODING", "HEXTILE"))
sys.argv[0] = "vncdo"
command.vncdo()
EOF
    chmod +x "$vncdo"
}

# The two sets use different subnets, desktops and passwords, and both differ from the shared
# lab captures (10.200.0.0/24, ports 5900/5901/5903, secret12), so no capture repeats another.
if [ "$set_name" = samples ]; then
    subnet=10.62.7 server_octet=5 password='m4ple-Rx' desk=finance-desk display_base=410
    users=(21 22 23 24)
else
    subnet=10.61.4 server_octet=1 password='Qv7!tern' desk=ops-desk display_base=440
    users=(31 32 33 34 35)
fi
# The shared server: an Xvnc desktop, an x11vnc and (bench) a kiosk without authentication.
server_ip="$subnet.$server_octet"
# Each user also has a desktop of their own (an Xvnc on its own address, port 5902): on a shared
# one, Xvnc sends every clipboard change to every viewer connected, so one user's paste would be
# clipboard traffic in everyone's session.
desktop_ip() { echo "$subnet.$(($1 - 10))"; }
desktop_ips() { local user; for user in "${users[@]}"; do desktop_ip "$user"; done; }
# Ports inside the agent's default VNC_PORTS (5900-5905), none the shared captures use for the
# same server: Xvnc with VNC authentication, x11vnc with VNC authentication, Xvnc without any.
port_xvnc=5902 port_x11vnc=5904 port_noauth=5905
ns_server=vgd-$set_name-srv
bridge=vgdbr-${set_name:0:1}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# ------------------------------------------------------------------ processes we started
start_time_of() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || echo 0; }
track() { echo "$1 $(start_time_of "$1") $2" >>"$pids"; }
is_ours() { [ -d "/proc/$1" ] && [ "$(start_time_of "$1")" = "$2" ]; }
# spawn NAME CMD...: runs CMD in the background, output to $run/NAME.log; sets SPAWNED.
spawn() {
    local name=$1
    shift
    "$@" >>"$run/$name.log" 2>&1 </dev/null &
    SPAWNED=$!
    track "$SPAWNED" "$name"
}
# stop PID: TERM, a bounded wait, then KILL, only while it is still the process we started.
stop() {
    local pid=$1 started i
    started=$(awk -v p="$pid" '$1 == p {print $2}' "$pids" | tail -n1)
    [ -n "$started" ] || return 0
    is_ours "$pid" "$started" || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do is_ours "$pid" "$started" || break; sleep 0.1; done
    is_ours "$pid" "$started" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}
stop_all() {
    [ -f "$pids" ] || return 0
    local pid started name
    tac "$pids" | while read -r pid started name; do
        is_ours "$pid" "$started" && kill -TERM "$pid" 2>/dev/null
    done
    sleep 1
    while read -r pid started name; do
        is_ours "$pid" "$started" && kill -KILL "$pid" 2>/dev/null
    done <"$pids"
    rm -f "$pids"
}
our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^vgd-$set_name-" || true; }
delete_namespaces() {
    local ns
    for ns in $(our_namespaces); do ip netns del "$ns"; done
}
# until SECONDS CMD...: polls CMD every 0.1 s for at most SECONDS.
until_true() {
    local tries=$(($1 * 10)) i
    shift
    for ((i = 0; i < tries; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    stop_all
    delete_namespaces
    log "cleanup done (exit $status)"
    exit "$status"
}

# ------------------------------------------------------------------ tools
install_tools() {
    local wanted="tigervnc-standalone-server tigervnc-tools tigervnc-viewer x11vnc xvfb xterm
        x11-apps x11-utils xdotool xclip tcpdump wireshark-common iproute2 ethtool python3-venv"
    [ "$set_name" = bench ] && wanted+=" nmap hydra medusa ncrack patator"
    local package missing=""
    for package in $wanted; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=" $package"
    done
    if [ -n "$missing" ]; then
        log "apt-get install$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends -o DPkg::Lock::Timeout=600 $missing >"$work/apt.log" 2>&1 ||
            { log "apt-get install failed, see $work/apt.log"; return 1; }
    fi
    if [ ! -x "$venv/bin/vncdo" ]; then
        python3 -m venv "$venv" && "$venv/bin/pip" install -q vncdotool==1.4.2 ||
            { log "installing vncdotool failed"; return 1; }
    fi
}

# ------------------------------------------------------------------ topology
bridge_up() {
    ip netns add "$ns_server"
    ip -n "$ns_server" link set lo up
    ip -n "$ns_server" link add "$bridge" type bridge
    ip -n "$ns_server" addr add "$server_ip/24" dev "$bridge"
    local address
    for address in $(desktop_ips); do ip -n "$ns_server" addr add "$address/24" dev "$bridge"; done
    ip -n "$ns_server" link set "$bridge" up
}
# client_ns OCTET: a namespace with address $subnet.OCTET on the bridge; prints its name.
client_ns() {
    local octet=$1 ns="vgd-$set_name-c$1"
    if ! ip netns list | awk '{print $1}' | grep -qx "$ns"; then
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip link add "vgd${set_name:0:1}$octet" netns "$ns_server" type veth peer name eth0 netns "$ns"
        ip -n "$ns_server" link set "vgd${set_name:0:1}$octet" master "$bridge" up
        ip -n "$ns" addr add "$subnet.$octet/24" dev eth0
        ip -n "$ns" link set eth0 up
        # Wire-sized frames, as a capture on a real network sees them.
        ip netns exec "$ns" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1
        ip netns exec "$ns_server" ethtool -K "vgd${set_name:0:1}$octet" tso off gso off gro off >/dev/null 2>&1
    fi
    echo "$ns"
}
listening() { ip netns exec "$ns_server" ss -Hltn "sport = :$1" | grep -q LISTEN; }
display_up() { DISPLAY=":$1" xdpyinfo >/dev/null 2>&1; }
# desktop_apps DISPLAY: what a user sees: a shell that echoes typing, a log that scrolls, a clock.
desktop_apps() {
    local display=$1
    spawn "clock$display" ip netns exec "$ns_server" env DISPLAY=":$display" timeout 1400 \
        xclock -geometry 160x160-8+8 -update 1
    spawn "shell$display" ip netns exec "$ns_server" env DISPLAY=":$display" timeout 1400 \
        xterm -geometry 72x14+8+8 -T shell -e cat
    spawn "log$display" ip netns exec "$ns_server" env DISPLAY=":$display" timeout 1400 \
        xterm -geometry 96x12+8-8 -T journal -e bash -c \
        'for i in $(seq 1 4000); do echo "$(date +%T) job $i $(head -c 24 /dev/urandom | base64)"; sleep 0.7; done'
}
servers_up() {
    printf '%s\n' "$password" | vncpasswd -f >"$work/passwd"
    chmod 600 "$work/passwd"
    local xvnc=$display_base x11vnc_display=$((display_base + 1)) noauth=$((display_base + 2))
    spawn xvnc ip netns exec "$ns_server" Xvnc ":$xvnc" -rfbport $port_xvnc -interface "$server_ip" -nolisten tcp \
        -geometry 1024x640 -depth 24 -desktop "$desk" -SecurityTypes VncAuth -PasswordFile "$work/passwd"
    spawn xvfb-x11vnc ip netns exec "$ns_server" Xvfb ":$x11vnc_display" -screen 0 960x600x24 -nolisten tcp
    until_true 10 display_up "$x11vnc_display" || { log "Xvfb :$x11vnc_display did not start"; return 1; }
    spawn x11vnc ip netns exec "$ns_server" env HOME="$work" x11vnc -display ":$x11vnc_display" \
        -rfbport $port_x11vnc -rfbportv6 -1 -noipv6 -listen "$server_ip" -rfbauth "$work/passwd" -forever -shared \
        -desktop "$desk-2" -q
    local displays="$xvnc $x11vnc_display" index
    for index in "${!users[@]}"; do
        spawn "desktop$index" ip netns exec "$ns_server" Xvnc ":$((display_base + 5 + index))" -rfbport $port_xvnc \
            -interface "$(desktop_ip "${users[$index]}")" -nolisten tcp -geometry 1024x640 -depth 24 \
            -desktop "$desk-${users[$index]}" -SecurityTypes VncAuth -PasswordFile "$work/passwd"
        displays+=" $((display_base + 5 + index))"
    done
    if [ "$set_name" = bench ]; then
        spawn xvnc-noauth ip netns exec "$ns_server" Xvnc ":$noauth" -rfbport $port_noauth -interface "$server_ip" -nolisten tcp \
            -geometry 800x600 -depth 24 -desktop kiosk -SecurityTypes None
        displays+=" $noauth"
        until_true 10 listening $port_noauth || { log "Xvnc without auth did not listen"; return 1; }
    fi
    until_true 10 listening $port_xvnc || { log "Xvnc did not listen"; return 1; }
    until_true 10 listening $port_x11vnc || { log "x11vnc did not listen"; return 1; }
    local display
    for display in $displays; do desktop_apps "$display"; done
    until_true 10 bash -c "DISPLAY=:$xvnc xdotool search --name journal" || log "apps slow to map"
}
# server_display HOST PORT: the X display behind a server (for the server-side clipboard).
server_display() {
    local index
    for index in "${!users[@]}"; do
        [ "$1" = "$(desktop_ip "${users[$index]}")" ] && { echo "$((display_base + 5 + index))"; return; }
    done
    case $2 in
        "$port_xvnc") echo "$display_base" ;;
        "$port_x11vnc") echo "$((display_base + 1))" ;;
        *) echo "$((display_base + 2))" ;;
    esac
}

# ------------------------------------------------------------------ capture
# capture_start FILE OCTET: records the client's VNC traffic on the bridge; sets CAPTURE.
capture_start() {
    local file=$1 octet=$2 name
    name=$(basename "$file" .pcap)
    spawn "tcpdump-$name" ip netns exec "$ns_server" tcpdump -Z root -i "$bridge" -s 0 -B 16384 -U --immediate-mode \
        -w "$file" "host $subnet.$octet and tcp portrange 5900-5905"
    CAPTURE=$SPAWNED
    until_true 5 grep -q 'listening on' "$run/tcpdump-$name.log" || log "tcpdump for $name slow"
}
capture_stop() {
    # The last FIN/ACK reaches the bridge after the client exits. (Immediate mode above: without
    # it, packets still in the kernel's buffer when tcpdump stops are counted but never written.)
    sleep 0.5
    kill -INT "$1" 2>/dev/null
    until_true 10 bash -c "! kill -0 $1"
    wait "$1" 2>/dev/null
    return 0
}

# ------------------------------------------------------------------ clients
# viewer_session OCTET PORT SECONDS TYPING_DELAY_MS TEXT CLIPBOARD [VIEWER OPTIONS...]
# The TigerVNC viewer on an Xvfb of its own, driven with xdotool: pointer over the shell, typing
# at the given pace (QEMU extended key events), a drag over the desktop, then idle viewing until
# SECONDS have passed. CLIPBOARD: none, paste:TEXT (viewer clipboard into the server) or
# copy:TEXT (server clipboard out to the viewer).
viewer_session() {
    local octet=$1 port=$2 seconds=$3 delay=$4 text=$5 clipboard=$6
    shift 6
    local ns display=$((display_base + 3 + octet)) began window i
    ns=$(client_ns "$octet")
    began=$(date +%s)
    if ! display_up "$display"; then
        spawn "xvfb$display" Xvfb ":$display" -screen 0 1280x800x24 -nolisten tcp
        until_true 10 display_up "$display" || { log "viewer display :$display did not start"; return 1; }
    fi
    spawn "viewer$octet" ip netns exec "$ns" env HOME="$work" DISPLAY=":$display" \
        timeout $((seconds + 30)) vncviewer -passwd "$work/passwd" -Shared=1 -FullScreen=0 "$@" \
        "${host:-$server_ip}::$port"
    local viewer=$SPAWNED
    window=""
    for ((i = 0; i < 100; i++)); do
        window=$(DISPLAY=":$display" xdotool search --name "TigerVNC" 2>/dev/null | head -n1)
        [ -n "$window" ] && break
        sleep 0.1
    done
    [ -n "$window" ] || { log "viewer $octet: no window"; stop "$viewer"; return 1; }
    # Focus follows the pointer on a desktop without a window manager: rest it over the shell.
    env DISPLAY=":$display" timeout 20 xdotool windowfocus --sync "$window" \
        mousemove --window "$window" 420 420 sleep 0.3 mousemove --window "$window" 120 80 sleep 0.3
    env DISPLAY=":$display" timeout 60 xdotool type --delay "$delay" "$text"
    env DISPLAY=":$display" timeout 10 xdotool key Return
    # Drag over empty desktop, never over an xterm: selecting text there would set PRIMARY, which
    # Xvnc sends to every viewer as server cut text.
    env DISPLAY=":$display" timeout 20 xdotool mousemove --window "$window" 600 300 mousedown 1 \
        mousemove --window "$window" 700 360 sleep 0.2 mousemove --window "$window" 760 420 mouseup 1
    case $clipboard in
        paste:*)
            printf '%s' "${clipboard#paste:}" | env DISPLAY=":$display" timeout 4 xclip -quiet -selection clipboard \
                >/dev/null 2>&1 &
            track $! "xclip-viewer$octet"
            ;;
        copy:* | bulkcopy:*)
            local content=${clipboard#*:}
            [ "${clipboard%%:*}" = bulkcopy ] && content=$(head -c "$content" /dev/urandom | base64 -w 76)
            printf '%s' "$content" | ip netns exec "$ns_server" env DISPLAY=":$(server_display "${host:-$server_ip}" "$port")" \
                timeout 4 xclip -quiet -selection clipboard >>"$run/xclip.log" 2>&1 &
            track $! "xclip-server$octet"
            # The viewer fetches the server's clipboard when something on its desktop pastes.
            sleep 1.5
            env DISPLAY=":$display" timeout 4 xclip -o -selection clipboard >/dev/null 2>&1
            ;;
    esac
    # Some more input spread over the session, then watching until its end.
    while [ $(($(date +%s) - began)) -lt "$seconds" ]; do
        env DISPLAY=":$display" timeout 10 xdotool mousemove --window "$window" \
            $((100 + RANDOM % 700)) $((80 + RANDOM % 400)) >/dev/null 2>&1
        sleep "$((1 + RANDOM % 4))"
    done
    stop "$viewer"
}
# vncdo_session OCTET PORT DELAY_MS COMMAND...: vncdotool's classic KeyEvent/PointerEvent client;
# every `capture` asks for a full framebuffer update.
vncdo_session() {
    local octet=$1 port=$2 delay=$3 ns
    shift 3
    ns=$(client_ns "$octet")
    ip netns exec "$ns" timeout 200 "$vncdo" -s "${host:-$server_ip}::$port" -p "$password" --delay "$delay" \
        -t 190 "$@" >>"$run/vncdo$octet.log" 2>&1
}
# vncdo_paste OCTET PORT TEXT: a session that pastes into the server (ClientCutText).
vncdo_paste() {
    local octet=$1 port=$2 text=$3 ns
    ns=$(client_ns "$octet")
    ip netns exec "$ns" timeout 60 "$venv/bin/python" - "${host:-$server_ip}" "$port" "$password" "$text" \
        >>"$run/vncdo$octet.log" 2>&1 <<'PY'
import sys, time
from vncdotool import api
host, port, password, text = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
client = api.connect(f"{host}::{port}", password=password, timeout=50)
client.mouseMove(90, 70)
client.paste(text)
time.sleep(2)
client.keyPress("enter")
client.refreshScreen(incremental=False)
client.disconnect()
api.shutdown()
PY
}

# ------------------------------------------------------------------ normal use
typed_lines=("git status" "less /var/log/syslog" "top -b -n 1 | head" "ssh build-07 uptime"
    "vi notes.txt" "df -h /srv" "make -j2 report" "tail -n 40 app.log" "ls -la ~/Downloads"
    "psql -c 'select count(*) from orders'" "systemctl status nginx" "cat TODO")
# normal_session K OCTET FILE: the K-th normal session, from client OCTET, into FILE (or no
# capture of its own when FILE is -). The K-th session's tool, server, length, typing pace and
# clipboard use vary with K, the way an office's week of remote desktop work varies.
normal_session() {
    local k=$1 octet=$2 file=$3 capture=""
    local lengths=(9 14 22 31 45 60 18 26 38 12 75 52)
    local delays=(35 70 110 160 240 90)
    local seconds=${lengths[$((k % ${#lengths[@]}))]} delay=${delays[$((k % ${#delays[@]}))]}
    local text=${typed_lines[$((k % ${#typed_lines[@]}))]}
    # Mostly the user's own desktop, sometimes the shared x11vnc.
    local port=$port_xvnc host
    host=$(desktop_ip "$octet")
    [ $((k % 4)) = 3 ] && port=$port_x11vnc host=$server_ip
    local clipboard=none
    case $((k % 6)) in
        1) clipboard="paste:ticket INC-$((4000 + k * 37)) resolved" ;;
        4) clipboard="copy:build $((k * 11)) ok" ;;
    esac
    [ "$file" = - ] || { capture_start "$file" "$octet"; capture=$CAPTURE; }
    if [ $((k % 3)) = 2 ]; then
        # vncdotool: classic events, full updates on `capture`, a pasted line every few sessions.
        local shots=$((1 + k % 3)) commands=(move 90 70 click 1 type "$text" key enter) i
        for ((i = 0; i < shots; i++)); do
            commands+=(pause "$((seconds / (shots + 1)))" move $((200 + i * 90)) $((150 + i * 40))
                capture "$work/shot$octet.png")
        done
        vncdo_session "$octet" "$port" "$delay" "${commands[@]}"
        [ "$clipboard" = none ] || vncdo_paste "$octet" "$port" "${clipboard#*:}"
    else
        viewer_session "$octet" "$port" "$seconds" "$delay" "$text" "$clipboard"
    fi
    [ -z "$capture" ] || capture_stop "$capture"
}

# ------------------------------------------------------------------ the samples set
record_samples() {
    # 32 sessions from four workstations, four at a time, in one capture like an office's morning.
    local user job jobs=() file="$work/samples.pcap"
    for user in "${users[@]}"; do client_ns "$user" >/dev/null; done
    spawn tcpdump-samples ip netns exec "$ns_server" tcpdump -Z root -i "$bridge" -s 0 -B 16384 -U --immediate-mode \
        -w "$file" "tcp portrange 5900-5905"
    local capture=$SPAWNED
    until_true 5 grep -q 'listening on' "$run/tcpdump-samples.log"
    for user in "${!users[@]}"; do
        (
            local k
            for ((k = user; k < ${DETECTION_SAMPLE_SESSIONS:-32}; k += ${#users[@]})); do
                normal_session "$k" "${users[$user]}" - || log "session $k failed"
            done
        ) &
        job=$!
        track "$job" "user${users[$user]}"
        jobs+=("$job")
    done
    for job in "${jobs[@]}"; do wait "$job"; done
    capture_stop "$capture"
    cp "$file" "$out/normal_office_sessions.pcap"
}

# ------------------------------------------------------------------ the bench set
label() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$subnet.$2" "$3" "$4" "$5" >>"$work/labels.tsv"; }
# scenario NAME OCTET CLASS KIND NOTE CMD...: records CMD's traffic from client OCTET into
# NAME.pcap and labels it.
scenario() {
    local name=$1 octet=$2 class=$3 kind=$4 note=$5
    shift 5
    client_ns "$octet" >/dev/null
    capture_start "$work/raw/$name.pcap" "$octet"
    local capture=$CAPTURE
    "$@" || log "scenario $name: client exit $?"
    capture_stop "$capture"
    label "$name.pcap" "$octet" "$class" "$kind" "$note"
}
# in_ns OCTET CMD...: an attack tool from client OCTET, for at most 75 s (hydra and ncrack go on
# retrying against Xvnc's refusals for as long as they are let).
in_ns() { local ns; ns=$(client_ns "$1"); shift; ip netns exec "$ns" env HOME="$work" timeout 75 "$@" >>"$run/attack.log" 2>&1; }
wordlist() {  # N [CORRECT]: N common passwords, then the correct one if asked
    head -n "$1" <<'EOF'
123456
password
admin
12345678
qwerty
letmein
vnc
abc123
monkey
111111
dragon
sunshine
master
welcome
shadow
football
iloveyou
trustno1
passw0rd
superman
EOF
    [ -z "${2:-}" ] || echo "$2"
}
record_attacks() {
    local lists="$work/lists"
    mkdir -p "$lists"
    wordlist 20 >"$lists/common.txt"
    wordlist 11 "$password" >"$lists/ends-right.txt"
    wordlist 6 >"$lists/short.txt"
    printf 'Winter2026\n' >"$lists/spray.txt"
    # Brute forcers against Xvnc (which refuses a source after 5 failures) and x11vnc (no
    # blacklist), one attacker address each.
    scenario hydra_xvnc 101 attack brute_force "hydra vnc, 20 passwords, Xvnc blacklists" \
        in_ns 101 hydra -I -P "$lists/common.txt" -s $port_xvnc -t 2 -f "$server_ip" vnc
    scenario hydra_x11vnc_success 102 attack brute_force_success "hydra vnc until the correct guess" \
        in_ns 102 hydra -I -P "$lists/ends-right.txt" -s $port_x11vnc -t 1 -f "$server_ip" vnc
    scenario medusa_x11vnc 103 attack brute_force "medusa vnc module, 20 passwords" \
        in_ns 103 medusa -h "$server_ip" -n $port_x11vnc -u none -P "$lists/common.txt" -M vnc -t 1
    scenario ncrack_xvnc 104 attack brute_force "ncrack vnc" \
        in_ns 104 ncrack -P "$lists/common.txt" --user none -g cd=300ms "vnc://$server_ip:$port_xvnc"
    scenario patator_x11vnc_success 105 attack brute_force_success "patator vnc_login, ends in the correct guess" \
        in_ns 105 patator vnc_login host="$server_ip" port=$port_x11vnc password=FILE0 0="$lists/ends-right.txt" \
        -t 1 -x quit:code=0
    scenario nmap_vnc_brute 106 attack brute_force "nmap --script vnc-brute" \
        in_ns 106 nmap -n -Pn -sV --version-light -p $port_x11vnc --script vnc-brute --script-args "passdb=$lists/common.txt,brute.firstonly=true" "$server_ip"
    # One password against every server the attacker finds: a spray.
    scenario spray_servers 107 attack password_spray "one password against six server addresses, two ports" \
        spray 107 "$lists/spray.txt"
    # Scanners: service detection and the VNC scripts over a port range and several addresses.
    scenario nmap_scan 108 attack scan "nmap -sV --script vnc-info over 5900-5910 on six addresses" \
        in_ns 108 nmap -n -Pn -sV --version-light -p 5900-5910 --script vnc-info \
        "$server_ip" $(desktop_ips)
    scenario nmap_auth_bypass 109 attack auth_bypass "nmap --script realvnc-auth-bypass,vnc-info" \
        in_ns 109 nmap -n -Pn -p $port_xvnc,$port_x11vnc,$port_noauth --script realvnc-auth-bypass,vnc-info "$server_ip"
    # A connect scan: the capture agent sees sessions only where the TCP handshake completed (a
    # SYN scan's half-open probes are no RFB session).
    scenario connect_scan 110 attack scan "nmap connect scan 5800-5999 of every server address" \
        in_ns 110 nmap -n -Pn -sT -p 5800-5999 --max-rate 400 "$server_ip" $(desktop_ips)
    # Someone finds the kiosk server that asks for no password and uses it.
    scenario noauth_kiosk 111 attack no_auth "Xvnc with security type None, used without a password" \
        noauth_use 111
    scenario noauth_viewer 112 attack no_auth "TigerVNC viewer on the server without authentication" \
        viewer_session 112 $port_noauth 15 80 "cat /etc/passwd" none -SecurityTypes=None
}
spray() {  # OCTET LIST: each server address and port once with each password in LIST
    local octet=$1 list=$2 target port pw ns
    ns=$(client_ns "$octet")
    while read -r pw; do
        for target in "$server_ip" $(desktop_ips); do
            for port in $port_xvnc $port_x11vnc; do
                ip netns exec "$ns" timeout 15 "$vncdo" -s "$target::$port" -p "$pw" -t 10 key shift \
                    >>"$run/spray.log" 2>&1
            done
        done
    done <"$list"
    return 0
}
noauth_use() {  # OCTET: vncdotool on the server that asks for no password
    local ns
    ns=$(client_ns "$1")
    ip netns exec "$ns" timeout 60 "$vncdo" -s "$server_ip::$port_noauth" --delay 60 -t 50 \
        move 100 80 click 1 type "id; hostname" key enter pause 2 capture "$work/kiosk.png" \
        >>"$run/noauth.log" 2>&1
}
record_normal_bench() {
    # 36 sessions from five workstations, one capture each, three workstations at a time.
    local user job jobs=() width=3
    for user in "${users[@]}"; do client_ns "$user" >/dev/null; done
    for user in "${!users[@]}"; do
        (
            local k name
            for ((k = user; k < 36; k += ${#users[@]})); do
                name=$(printf 'normal_%02d' "$k")
                normal_session "$((k + 100))" "${users[$user]}" "$work/raw/$name.pcap" || log "session $k failed"
                label "$name.pcap" "${users[$user]}" benign normal "normal session $k"
            done
        ) &
        job=$!
        track "$job" "user${users[$user]}"
        jobs+=("$job")
        # At most $width users work at once on two cores.
        if [ ${#jobs[@]} -ge "$width" ]; then wait "${jobs[0]}"; jobs=("${jobs[@]:1}"); fi
    done
    for job in "${jobs[@]}"; do wait "$job"; done
}
record_insiders() {
    # After a correct login, from known workstations unless said otherwise.
    scenario insider_bulk_copy_viewer 31 insider bulk_clipboard "48 KB copied out through the viewer's clipboard" \
        on "$(desktop_ip 31)" viewer_session 31 $port_xvnc 20 90 "cat customers.csv" bulkcopy:36000
    scenario insider_bulk_copy_vncdo 33 insider bulk_clipboard "30 KB server cut text to a vncdotool client" \
        bulk_copy_vncdo 33 22000
    scenario insider_night_viewer 32 insider off_hours "an ordinary session moved to 03:10" \
        on "$(desktop_ip 32)" viewer_session 32 $port_xvnc 24 110 "ls -la /srv/backup" none
    scenario insider_night_vncdo 34 insider off_hours "an ordinary vncdotool session moved to 02:50" \
        vncdo_session 34 $port_x11vnc 80 move 90 70 click 1 type "tar czf /tmp/x.tgz /srv" key enter \
        pause 6 capture "$work/night.png"
    scenario insider_first_time_source 77 insider first_time_source "correct login from an address never seen before" \
        on "$(desktop_ip 31)" viewer_session 77 $port_xvnc 20 90 "sudo -l" none
    scenario insider_first_time_source_vncdo 78 insider first_time_source "vncdotool login from a new address" \
        vncdo_session 78 $port_x11vnc 70 move 90 70 click 1 type "whoami" key enter pause 4 capture "$work/new.png"
    scenario insider_heavy_raw 35 insider heavy "two full framebuffers in Raw encoding within 5 s (5 MB)" \
        on "$(desktop_ip 35)" heavy_vncdo 35 2
}
bulk_copy_vncdo() {  # OCTET BYTES: a vncdotool client on its desktop while the clipboard fills
    local octet=$1 bytes=$2 ns
    ns=$(client_ns "$octet")
    ip netns exec "$ns" timeout 40 "$vncdo" -s "$(desktop_ip "$octet")::$port_xvnc" -p "$password" --delay 50 -t 35 \
        move 90 70 click 1 pause 8 capture "$work/bulk1.png" pause 5 capture "$work/bulk2.png" \
        >>"$run/bulk.log" 2>&1 &
    local client=$!
    track "$client" bulk-vncdo
    # Xvnc tells a client of clipboard changes, not of what the clipboard held when it connected:
    # copy once vncdotool (a slow start on a busy machine) has logged in.
    sleep 6
    head -c "$bytes" /dev/urandom | base64 -w 76 | ip netns exec "$ns_server" \
        env DISPLAY=":$(server_display "$(desktop_ip "$octet")" $port_xvnc)" \
        timeout 4 xclip -quiet -selection clipboard >>"$run/xclip.log" 2>&1
    wait "$client"
}
heavy_vncdo() {  # OCTET FRAMES: full framebuffer updates in Raw encoding, 2.6 MB each
    local octet=$1 frames=$2 commands=(move 90 70 click 1) i
    for ((i = 0; i < frames; i++)); do commands+=(pause 1 capture "$work/heavy.png"); done
    VNCDO_ENCODING=RAW vncdo_session "$octet" "$port_xvnc" 30 "${commands[@]}"
}
# The long session runs beside the attacks: three minutes of light use on a user's own desktop,
# past any normal session's length (at most 75 s).
record_long_session() {
    scenario insider_long_session 34 insider long "a viewer left open for 200 s with light input" \
        on "$(desktop_ip 34)" viewer_session 34 $port_xvnc 200 140 "watch -n 5 df -h" none
}
# on HOST CMD...: CMD's clients connect to HOST instead of the shared server.
on() {
    local host=$1
    shift
    "$@"
}

# Moves each capture to its place in a week of office use: normal sessions on weekdays between
# 08:00 and 18:00, attacks on the days after, the night sessions at about 3 a.m. The week is the
# one two weeks before the recording, so every session lies in the past.
schedule() {
    local monday name first target offset k
    monday=$(date -u -d "$(date -u +%F) -$(($(date -u +%u) - 1 + 14)) days" +%s)
    mkdir -p "$out"
    while IFS=$'\t' read -r name _ class kind _; do
        first=$(capinfos -a -T -r -S "$work/raw/$name" 2>/dev/null | awk -F'\t' 'NR == 1 {print int($2)}')
        [ -n "$first" ] || { log "no packets in $name"; continue; }
        case $name in
            normal_*)
                k=${name#normal_}
                k=$((10#${k%.pcap}))
                # Every workstation works on every weekday, at varied hours.
                target=$((monday + ((k * 3 + k / 5) % 5) * 86400 + (8 + (k * 7 + k / 5 * 3) % 10) * 3600 + (k * 13 % 60) * 60)) ;;
            insider_night_viewer*) target=$((monday + 2 * 86400 + 3 * 3600 + 600)) ;;
            insider_night_vncdo*) target=$((monday + 3 * 86400 + 2 * 3600 + 3000)) ;;
            insider_*) target=$((monday + 4 * 86400 + (11 + ${#name} % 5) * 3600 + ${#name} * 60)) ;;
            *) target=$((monday + (1 + ${#name} % 4) * 86400 + (${#name} * 5 % 24) * 3600 + ${#name} * 97 % 3600)) ;;
        esac
        offset=$((target - first))
        editcap -F pcap -t "$offset" "$work/raw/$name" "$out/$name"
    done <"$work/labels.tsv"
    {
        printf '# capture\tclient\tclass\tkind\tnote\n'
        cat "$work/labels.tsv"
    } >"$out/labels.tsv"
}

# ------------------------------------------------------------------ main
# DETECTION_RESCHEDULE=1 moves the last bench recording's captures ($work/raw) into DIR again,
# without recording: for a change of the schedule alone.
if [ "$set_name" = bench ] && [ "${DETECTION_RESCHEDULE:-0}" = 1 ]; then
    schedule
    log "rescheduled $(ls "$out"/*.pcap | wc -l) captures into $out"
    exit 0
fi
trap cleanup EXIT INT TERM HUP
stop_all
delete_namespaces
rm -rf "$run" "$work/raw"
mkdir -p "$run" "$work/raw"
# hydra and nmap write state files into the working folder.
cd "$work"
: >"$work/labels.tsv"
install_tools || exit 1
write_vncdo
bridge_up || exit 1
servers_up || exit 1
if [ "$set_name" = samples ]; then
    record_samples
else
    record_normal_bench
    record_long_session &
    long_job=$!
    track "$long_job" long-session
    record_attacks
    # The long session's client records on its own address: done before that address is used again.
    wait "$long_job"
    record_insiders
    schedule
fi
log "done: $(ls "$out"/*.pcap | wc -l) captures in $out, $(du -sh "$out" | cut -f1)"
