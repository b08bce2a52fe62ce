# Helpers the benchmark scripts share (sourced, never run): the CPU model, a command's peak RSS
# and wall time, and the check that a swift binary knows the tuners a benchmark asks for.
# shellcheck shell=bash

# The CPU model as lscpu names it ("AMD EPYC ...").
cpu_model() { lscpu | sed -n 's/^Model name: *//p' | head -1; }

# The CPU model, the core count and the load average, on one line, for a benchmark's header.
machine_line() { echo "cpu: $(cpu_model), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"; }

# timed FILE CMD...: runs CMD under /usr/bin/time, writing "PEAK_RSS_KIB WALL_SECONDS" to FILE;
# returns CMD's exit status.
timed() {
    local file=$1; shift
    /usr/bin/time -f '%M %e' -o "$file" "$@"
}

# The optimizers that run as `--tuner_type full --optimizer NAME` rows of a tuner benchmark.
TUNER_OPTIMIZERS="galore q_galore"

# tuner_flags NAME: the `swift sft` flags that train with NAME (a tuner, or an optimizer of
# $TUNER_OPTIMIZERS on full fine-tuning).
tuner_flags() {
    case " $TUNER_OPTIMIZERS " in
        *" $1 "*) echo "--tuner_type full --optimizer $1" ;;
        *) echo "--tuner_type $1" ;;
    esac
}

# check_tuners SWIFT NAME...: fails, naming them, if SWIFT lists any NAME neither as a tuner (or
# a tuner's alias) nor, for the rows of $TUNER_OPTIMIZERS, as an optimizer. Never skips a row.
check_tuners() {
    local swift=$1; shift
    local tuners optimizers
    tuners="$("$swift" list tuners --json)" || { echo "FAIL: \`$swift list tuners --json\` failed" >&2; return 1; }
    # An older binary has no optimizer registry: its galore rows are unknown, not skipped.
    optimizers="$("$swift" list optimizers --json 2>/dev/null || echo '[]')"
    python3 - "$tuners" "$optimizers" "$TUNER_OPTIMIZERS" "$@" <<'PY'
import json, sys
tuners, optimizers, as_optimizer, wanted = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
def names(records):
    return {n for r in json.loads(records) for n in [r["name"], *r.get("aliases", [])]}
known_tuners, known_optimizers = names(tuners), names(optimizers)
unknown = [w for w in wanted
           if w not in (known_optimizers if w in as_optimizer else known_tuners)]
if unknown:
    print(f"FAIL: this swift binary does not know {', '.join(unknown)} "
          f"(`swift list tuners` / `swift list optimizers`); tuners it knows: "
          f"{', '.join(sorted(known_tuners))}; optimizers: {', '.join(sorted(known_optimizers)) or 'none'}",
          file=sys.stderr)
    sys.exit(1)
PY
}
