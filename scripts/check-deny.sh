#!/usr/bin/env bash
# Checks the dependency graphs of both workspaces (the root one and fuzz/) against deny.toml with
# cargo-deny: licenses, bans (duplicate versions, wildcards), sources (crates.io only) and
# advisories. `make lint` runs it.
#
# Offline by design: CI reaches crates.io but not GitHub, where the RustSec advisory database
# lives. So the crate graph comes from `cargo metadata` (crates.io), and the advisories from a
# local snapshot of the database, looked for in this order:
#   $WARDEN_ADVISORY_DB, .ci/advisory-db/, ../shared/advisory-db/
# (its README says where it came from and when). cargo-deny opens a database only as a git
# repository with a commit, so this script makes a throwaway one in target/deny/ on every run,
# dated at the snapshot's commit date so that `maximum-db-staleness` in deny.toml measures the
# snapshot's real age. With no snapshot, the other three checks still run and the advisories
# are reported as NOT checked.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "deny: $*" >&2; }

deny=""
if [ -x .venv/bin/cargo-deny ]; then
  deny=.venv/bin/cargo-deny
elif command -v cargo-deny >/dev/null 2>&1; then
  deny=$(command -v cargo-deny)
else
  say "cargo-deny is not installed (scripts/setup.sh puts it in .venv/)"
  exit 1
fi

out="$PWD/target/deny"
mkdir -p "$out"

# cargo-deny reads the graph with `cargo metadata` and wants every crate of the lock files on
# disk (`cargo fetch`, which it runs offline): fetch them first, from crates.io.
workspaces=(Cargo.toml fuzz/Cargo.toml)
for manifest in "${workspaces[@]}"; do
  cargo fetch --locked --quiet --manifest-path "$manifest" ||
    { say "FAILED: cannot fetch the crates of $manifest's lock file (is it up to date? see above)"; exit 1; }
done

snapshot=""
for dir in "${WARDEN_ADVISORY_DB:-}" .ci/advisory-db ../shared/advisory-db; do
  if [ -n "$dir" ] && [ -f "$dir/SOURCE" ] && [ -d "$dir/crates" ]; then
    snapshot=$(cd "$dir" && pwd)
    break
  fi
done

checks=(licenses bans sources)
if [ -n "$snapshot" ]; then
  checks+=(advisories)
  commit=$(sed -n 's/^commit=//p' "$snapshot/SOURCE")
  date=$(sed -n 's/^date=//p' "$snapshot/SOURCE")
  age_days=$(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 ))
  say "advisories from $snapshot: RustSec advisory-db ${commit:0:12} of ${date%%T*} ($age_days days old)"
  max_days=$(sed -n 's/^maximum-db-staleness *= *"P\([0-9]*\)D".*/\1/p' deny.toml)
  if [ -n "$max_days" ] && [ "$age_days" -gt "$max_days" ]; then
    say "the snapshot is older than deny.toml's maximum-db-staleness ($max_days days), so the advisories check will fail as stale: refresh it (its README says how)"
  fi

  # cargo-deny looks for the database in a directory under db-path named after its URL; the
  # name comes from cargo-deny itself (its debug log), so a new version that names it otherwise
  # still finds it.
  export WARDEN_ADVISORY_DBS="$out/advisory-dbs"
  rm -rf "$WARDEN_ADVISORY_DBS"
  mkdir -p "$WARDEN_ADVISORY_DBS"
  db=$("$deny" --offline --log-level debug --config deny.toml check advisories 2>&1 |
    sed -n "s/.*Opening advisory database at '\([^']*\)'.*/\1/p" | head -1) || true
  if [ -z "$db" ]; then
    say "could not learn where cargo-deny $("$deny" --version | cut -d' ' -f2) opens its advisory database"
    exit 1
  fi
  mkdir -p "$db"
  cp -R "$snapshot/." "$db/"
  git_at_snapshot=(env GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date"
    git -C "$db" -c user.name=warden -c user.email=warden@localhost -c commit.gpgsign=false
    -c core.hooksPath=/dev/null -c init.defaultBranch=main)
  "${git_at_snapshot[@]}" init -q
  "${git_at_snapshot[@]}" add -A
  "${git_at_snapshot[@]}" commit -q -m "RustSec advisory-db snapshot $commit"
  touch -d "$date" "$db/.git/HEAD"

  # The snapshot holds the advisories of the crates that were in our lock files when it was
  # taken (crates.txt). A crate added since may have advisories the snapshot lacks.
  missing=$(comm -23 \
    <(awk -F'"' '/^name = /{n=$2} /^source = "registry\+/{print n}' Cargo.lock fuzz/Cargo.lock | sort -u) \
    <(sort -u "$snapshot/crates.txt"))
  if [ -n "$missing" ]; then
    say "WARNING: the advisory snapshot predates these crates, so their advisories are NOT checked" \
      "(refresh the snapshot, see its README): $(tr '\n' ' ' <<<"$missing")"
  fi
else
  say "WARNING: advisories NOT checked: no advisory snapshot (\$WARDEN_ADVISORY_DB, .ci/advisory-db/ or ../shared/advisory-db/)"
  # Never read in this case, but deny.toml's db-path must expand.
  export WARDEN_ADVISORY_DBS="$out/advisory-dbs"
fi

# One deny.toml serves both workspaces, so an entry only one of them needs is expected to go
# unused in the other; the other run still reports it once nothing needs it.
declare -A unused_elsewhere=(
  [Cargo.toml]="-A license-exception-not-encountered"
  [fuzz/Cargo.toml]="-A unnecessary-skip -A unmatched-skip"
)
status=0
for manifest in "${workspaces[@]}"; do
  name=$(dirname "$manifest"); [ "$name" = . ] && name=root
  say "checking the $name workspace ($manifest): ${checks[*]}"
  # shellcheck disable=SC2086 # the allowances are words
  if ! "$deny" --offline --locked --manifest-path "$manifest" --config deny.toml \
    check ${unused_elsewhere[$manifest]} "${checks[@]}"; then
    say "FAILED for the $name workspace ($manifest): see the errors above; the policy is deny.toml"
    status=1
  fi
done
exit $status
