# Sourced by the device scripts: `step NAME COMMAND...` runs COMMAND with its output in
# $step_logs/NAME.log, shows the log's tail, and on failure adds NAME to the `failed` array and
# returns 1 (later steps still run; each script's exit status says whether all passed).
# The caller sets step_logs (a directory) and failed=() first.

step() {
  local name=$1
  shift
  echo "=== $name: $*"
  if ! "$@" >"$step_logs/$name.log" 2>&1; then
    failed+=("$name")
    tail -40 "$step_logs/$name.log"
    return 1
  fi
  tail -5 "$step_logs/$name.log"
}
