# Helpers sourced by bench/compare.sh and bench/mesh.sh.
#
# base_worktree REV DIR checks REV out into a detached git worktree at DIR
# (the sser library and binary as they were at REV); base_cleanup removes
# it again. Callers run base_cleanup from their EXIT trap.

bench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_wt=""

base_worktree() {
  local rev dir="$2"
  rev="$(git -C "${bench_root}" rev-parse --verify --quiet "$1^{commit}")" || {
    echo "BASE=$1 is not a commit of ${bench_root}" >&2
    return 1
  }
  git -C "${bench_root}" worktree add --detach --quiet "${dir}" "${rev}"
  base_wt="${dir}"
  echo "BASE ${1} = ${rev:0:12} checked out at ${dir}" >&2
}

base_cleanup() {
  if [[ -n "${base_wt}" ]]; then
    git -C "${bench_root}" worktree remove --force "${base_wt}" 2>/dev/null ||
      echo "could not remove the worktree ${base_wt}; run: git worktree prune" >&2
    base_wt=""
  fi
}
