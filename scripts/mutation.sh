#!/usr/bin/env bash
# Mutation testing of op25b's core against the unit tests (mutmut), by hand, not in CI:
# it takes tens of minutes on two cores. Each core module is run on its own, bounded in
# time, and the per-module table (mutants, killed, survived, ...) plus the names of the
# survivors are printed at the end; tests/README.md keeps the table and says, for each
# survivor, which test now kills it or why it is equivalent.
#
#   ./scripts/mutation.sh                 every core module
#   ./scripts/mutation.sh decide lpm      only these (names as in CORE below)
#
# Environment: MUTATION_JOBS (parallel mutants, default 2), MUTATION_TIMEOUT (seconds per
# module, default 1800), MUTATION_DIR (scratch copy; default a new temporary directory).
# The run works on a copy of the working tree, so editing while it runs is safe; the
# copy is kept (its mutants/ holds the results: `cd DIR && mutmut show NAME`).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

# name -> module file; the [tool.mutmut] only_mutate list in pyproject.toml is the same set.
declare -A CORE=(
    [decide]=op25b/policy/decide.py
    [lpm]=op25b/policy/lpm.py
    [compiled]=op25b/policy/compiled.py
    [packet]=op25b/dataplane/packet.py
    [loader]=op25b/policy/loader.py
    [daemonsection]=op25b/policy/daemonsection.py
    [yamlnodes]=op25b/policy/yamlnodes.py
    [enforcer]=op25b/dataplane/enforcer.py
    [aggregator]=op25b/dataplane/aggregator.py
    [abuserecord]=op25b/dataplane/abuserecord.py
    [keys]=op25b/dataplane/keys.py
    [botscore]=op25b/report/botscore.py
    [ruletext]=op25b/kernel/ruletext.py
    [setcontents]=op25b/kernel/setcontents.py
    [ipsets]=op25b/kernel/ipsets.py
)
ORDER=(decide lpm compiled packet loader daemonsection yamlnodes enforcer aggregator abuserecord keys
       botscore ruletext setcontents ipsets)

if ! .venv/bin/python -c "import mutmut" 2>/dev/null; then
    echo "mutation: mutmut is not installed; run: .venv/bin/python -m pip install -e '.[mutation]'" >&2
    exit 3
fi
names=("$@")
[ "${#names[@]}" -gt 0 ] || names=("${ORDER[@]}")
for n in "${names[@]}"; do
    if [ -z "${CORE[$n]:-}" ]; then
        echo "mutation: unknown module '$n' (one of: ${ORDER[*]})" >&2
        exit 2
    fi
done

JOBS=${MUTATION_JOBS:-2}
LIMIT=${MUTATION_TIMEOUT:-1800}
WORK=${MUTATION_DIR:-$(mktemp -d /tmp/op25b-mutation.XXXXXX)}
mkdir -p "$WORK"
# The working tree as it is now (tracked and new files, not ignored ones), into the copy.
git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$WORK"
echo "mutation: working in $WORK"

cd "$WORK"
declare -A SECONDS_BY
for n in "${names[@]}"; do
    module=${CORE[$n]}
    glob="$(echo "${module%.py}" | tr / .).*"
    echo "mutation: $n ($module), at most ${LIMIT}s"
    start=$(date +%s)
    rc=0
    timeout --kill-after=30 "$LIMIT" "$REPO/.venv/bin/mutmut" run --max-children "$JOBS" "$glob" \
        >"$WORK/mutmut-$n.log" 2>&1 || rc=$?
    SECONDS_BY[$n]=$(($(date +%s) - start))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "mutation: $n hit the ${LIMIT}s bound; its table row counts what finished" >&2
    elif [ "$rc" -ne 0 ]; then
        echo "mutation: mutmut failed for $n (exit $rc); see $WORK/mutmut-$n.log" >&2
        tail -5 "$WORK/mutmut-$n.log" >&2
    fi
done

args=()
for n in "${names[@]}"; do args+=("$n=${CORE[$n]}:${SECONDS_BY[$n]}"); done
"$REPO/.venv/bin/python" "$REPO/scripts/mutation_table.py" "$WORK/mutants" "${args[@]}"
