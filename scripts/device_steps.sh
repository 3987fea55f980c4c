# Sourced by the device scripts: progress lines and timed steps under the result folder $R.
#   step NAME LOGFILE COMMAND...   runs COMMAND with its output in LOGFILE and logs start, end,
#                                  exit status and seconds to $R/progress.log
log() { echo "$(date +%T) $*" >> "$R/progress.log"; }
step() {
  local name=$1 out=$2 t0=$SECONDS rc
  shift 2
  log "start $name"
  "$@" > "$out" 2>&1
  rc=$?
  log "end   $name: exit $rc, $((SECONDS - t0)) s"
  return $rc
}
