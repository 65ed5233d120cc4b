#!/usr/bin/env bash
# Runs every fuzz target in turn, keeps and minimises the corpora, and appends one row per
# target (executions, corpus size, coverage) to the table in fuzz/README.md.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      default 600
#   fuzz/run.sh --totals                  executions per target summed over the table
#   fuzz/run.sh --select                  only check in a selection of the kept working corpora
#
# Environment:
#   EMBER_FUZZ_JOBS=N      libFuzzer processes (default 2 = both cores, `-fork=N`); 1 runs a
#                          single plain libFuzzer process (one core)
#   EMBER_FUZZ_TARGETS=".."  targets to run (default: every fuzz_targets/*.rs)
#   EMBER_FUZZ_RUNS=N      also stop a target after N executions (single-process runs only)
#   EMBER_FUZZ_KEEP=N      at most N inputs added to each checked-in corpus per run (default 12)
#   EMBER_FUZZ_KEEP_BYTES  largest input that may be checked in (default 65536)
#   EMBER_FUZZ_NICE=N      nice level (default 10)
#   EMBER_FUZZ_SANITIZER   cargo fuzz sanitizer (default none; `address` for ASan+LSan)
#   EMBER_FUZZ_NO_README=1 do not append to README.md (trial runs)
# Arguments after `--` go to libFuzzer unchanged.
#
# Corpora: fuzz/build/corpus/<target>/ is the working corpus (git-ignored, minimised with
# libFuzzer's -merge=1 after each run and kept for the next one). The image targets are also
# fed fuzz/build/seeds/<target>/ from seeds.sh (real qemu-img images of every format and the
# hostile catalogue). Inputs that add coverage beyond the checked-in corpus fuzz/corpus/<target>/
# (which `cargo test` replays) are copied there, greedily (most new coverage features first),
# at most EMBER_FUZZ_KEEP per run: review `git status fuzz/corpus` before committing.
# Build: no sanitizer by default. Every fuzzed path is safe Rust (no `unsafe` in format/,
# extent.rs, bitmap.rs, alloc.rs, drivers or target), so ASan adds nothing that the panics,
# overflow checks and debug assertions (kept on: cargo fuzz's default) miss, and costs 3-5x.
# `extent_ops` is built apart without comparison tracing: its input is decoded, not compared
# against magic values, and tracing the model's per-unit loops took two thirds of its time.
# A crash stops that target (its input is left in fuzz/artifacts/<target>/), is recorded in
# the table, the other targets still run, and the script exits 1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
readme=$here/README.md

if [ "${1:-}" = "--totals" ]; then
    # Sum the executions column per target over every row of the runs table.
    awk -F'|' '/^\| 20[0-9][0-9]-/ {
        t = $3; gsub(/ /, "", t); e = $7; gsub(/[ ,]/, "", e); n[t] += e; r[t]++
    } END { for (t in n) printf "%-16s %12d executions in %d runs\n", t, n[t], r[t] }' "$readme" | sort
    exit 0
fi

select_only=0
if [ "${1:-}" = "--select" ]; then select_only=1; shift; fi
secs=600
if [ $# -gt 0 ] && [ "$1" != "--" ]; then secs=$1; shift; fi
[ "${1:-}" = "--" ] && shift
case $secs in '' | *[!0-9]*) echo "run.sh: SECONDS_PER_TARGET must be a number" >&2; exit 2 ;; esac
jobs=${EMBER_FUZZ_JOBS:-2}
keep=${EMBER_FUZZ_KEEP:-12}
keep_bytes=${EMBER_FUZZ_KEEP_BYTES:-65536}
nice_level=${EMBER_FUZZ_NICE:-10}
san=${EMBER_FUZZ_SANITIZER:-none}
no_trace_compares=" extent_ops "
targets=${EMBER_FUZZ_TARGETS:-$(for f in fuzz_targets/*.rs; do basename "$f" .rs; done)}

command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo install cargo-fuzz first" >&2; exit 2; }
echo "run.sh: building the fuzz targets" >&2
RUSTC_BOOTSTRAP=1 nice -n "$nice_level" cargo fuzz build -s "$san" >&2
for t in $no_trace_compares; do
    RUSTC_BOOTSTRAP=1 nice -n "$nice_level" cargo fuzz build -s "$san" --no-trace-compares \
        --target-dir build/nocmp "$t" >&2
done
binary() {
    case $no_trace_compares in
        *" $1 "*) echo "$here/build/nocmp/x86_64-unknown-linux-gnu/release/$1" ;;
        *) echo "$here/build/x86_64-unknown-linux-gnu/release/$1" ;;
    esac
}

if command -v qemu-img >/dev/null; then
    rm -rf build/seeds
    ./seeds.sh build/seeds
else
    echo "run.sh: qemu-img not found: the image targets get no image seeds" >&2
fi

# select_inputs TARGET BIN WORK LOG: copies into corpus/TARGET at most $keep inputs of WORK (each
# at most $keep_bytes) that add coverage features beyond the checked-in corpus, greedily: the
# input that adds the most features not yet covered first. Prints how many it copied.
select_inputs() {
    local t=$1 bin=$2 work=$3 log=$4 sel f name sum s added=0
    sel=$(mktemp -d)
    mkdir "$sel/out"
    cp corpus/"$t"/* "$sel/out"/ 2>/dev/null || true
    # The merge's control file lists every input and its features; the checked-in copies
    # (its first corpus) count as covered already.
    nice -n "$nice_level" "$bin" -merge=1 -timeout=10 -merge_control_file="$sel/control" \
        "$sel/out" "$work" > "$log" 2>&1 || true
    while read -r f; do
        name=$(basename "$f")
        # name a seed after what it is
        if [ -d "build/seeds/$t" ]; then
            sum=$(sha1sum < "$f" | cut -c1-40)
            for s in build/seeds/"$t"/*; do
                if [ "$(sha1sum < "$s" | cut -c1-40)" = "$sum" ]; then name=seed-$(basename "$s"); break; fi
            done
        fi
        [ -e "corpus/$t/$name" ] && continue
        cp "$f" "corpus/$t/$name"
        added=$((added + 1))
    done < <([ -f "$sel/control" ] && awk -v keep="$keep" -v maxb="$keep_bytes" '
        NR == 1 { n = $1; next }
        NR == 2 { first = $1; next }
        NR <= n + 2 { path[NR - 3] = $0; next }
        $1 == "STARTED" { size[$2] = $3; next }
        $1 == "FT" {
            if ($2 < first) { for (k = 3; k <= NF; k++) cov[$k] = 1 }
            else if (size[$2] <= maxb) ft[$2] = $0
        }
        END {
            for (round = 0; round < keep; round++) {
                best = -1; bestg = 0
                for (i in ft) {
                    m = split(ft[i], a, " "); g = 0
                    for (k = 3; k <= m; k++) if (!(a[k] in cov)) g++
                    if (g > bestg || (g == bestg && g > 0 && size[i] < size[best])) { best = i; bestg = g }
                }
                if (best < 0) break
                m = split(ft[best], a, " ")
                for (k = 3; k <= m; k++) cov[a[k]] = 1
                delete ft[best]
                print path[best]
            }
        }' "$sel/control")
    rm -rf "$sel"
    echo "$added"
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
day=$(date -u +%Y-%m-%d)
mkdir -p build/logs
rows=()
failed=0

for t in $targets; do
    bin=$(binary "$t")
    [ -x "$bin" ] || { echo "run.sh: no fuzz target $t" >&2; exit 2; }
    if [ "$select_only" = 1 ]; then
        mkdir -p "build/corpus/$t" "corpus/$t"
        added=$(select_inputs "$t" "$bin" "build/corpus/$t" "build/logs/$stamp-$t.select")
        echo "run.sh: $t: +$added checked in, $(find "corpus/$t" -type f | wc -l) in all" >&2
        continue
    fi
    work=build/corpus/$t
    mkdir -p "$work" "corpus/$t" "artifacts/$t"
    dirs=("$work" "corpus/$t")
    [ -d "build/seeds/$t" ] && dirs+=("build/seeds/$t")
    args=(-max_total_time="$secs" -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/")
    # names: a name is at most 127 bytes, longer inputs only add lines and cost time
    [ "$t" = names ] && args+=(-max_len=512)
    if [ "$jobs" -gt 1 ]; then
        args+=(-fork="$jobs")
    elif [ -n "${EMBER_FUZZ_RUNS:-}" ]; then
        args+=(-runs="$EMBER_FUZZ_RUNS")
    fi
    log=build/logs/$stamp-$t.log
    echo "run.sh: $t for ${secs}s with $jobs job(s), log $log" >&2
    marker=build/logs/.start-$t
    touch "$marker"
    start=$(date +%s)
    set +e
    nice -n "$nice_level" "$bin" "${args[@]}" "$@" "${dirs[@]}" > "$log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    new_art=$(find "artifacts/$t" -type f -newer "$marker" | head -1)

    # Executions and coverage: the last status line ("#N DONE cov: ..." in a single
    # process, "#N: cov: ..." from the fork-mode parent); a crash's final stats win.
    last=$(grep -a -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -E 's/^#([0-9]+).*/\1/' <<< "$last")
    units=$(grep -a -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}' || true)
    [ -n "$units" ] && [ "$units" -gt "${execs:-0}" ] && execs=$units
    cov=$(grep -a -o -E 'cov: [0-9]+' <<< "$last" | awk '{print $2}' || true)
    ft=$(grep -a -o -E 'ft: [0-9]+' <<< "$last" | awk '{print $2}' || true)
    result=ok
    if grep -a -q 'libFuzzer: run interrupted' "$log" && [ -z "$new_art" ]; then
        result="interrupted"
        failed=1
    elif [ "$rc" -ne 0 ] || [ -n "$new_art" ]; then
        result="CRASH rc=$rc ${new_art:-no artifact}"
        failed=1
    fi

    # Minimise the working corpus (everything it, the checked-in corpus and the seeds cover).
    min=build/corpus/$t.min
    rm -rf "$min" && mkdir -p "$min"
    nice -n "$nice_level" "$bin" -merge=1 -timeout=10 "$min" "${dirs[@]}" > "$log.merge" 2>&1 || {
        echo "run.sh: merge of $t failed, see $log.merge" >&2; failed=1; rm -rf "$min"; }
    if [ -d "$min" ]; then rm -rf "$work" && mv "$min" "$work"; fi
    nwork=$(find "$work" -type f | wc -l)

    # Check in what adds coverage beyond the checked-in corpus (greedy, capped).
    added=$(select_inputs "$t" "$bin" "$work" "$log.select")
    nin=$(find "corpus/$t" -type f | wc -l)

    rate=$(( ${execs:-0} / (elapsed > 0 ? elapsed : 1) ))
    row="| $day | $t | $san | $elapsed | $jobs | ${execs:-?} | $rate | ${cov:-?} | ${ft:-?} | $nwork | $nin (+$added) | $result |"
    echo "run.sh: $row" >&2
    rows+=("$row")
    # one row per target as soon as it is done, so an interrupted run keeps what it measured
    [ "${EMBER_FUZZ_NO_README:-}" = 1 ] || echo "$row" >> "$readme"
done

printf '%s\n' "${rows[@]}"
exit "$failed"
