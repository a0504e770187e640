#!/usr/bin/env bash
# gofmt, go vet and go mod tidy must leave the tree as it is.
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
fail=0
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n ${unformatted} ]]; then
  echo "gofmt would change:" >&2
  echo "${unformatted}" >&2
  fail=1
fi
go vet ./... || fail=1
(cd test/interop && go vet ./...) || fail=1
cp go.mod /tmp/sser-go.mod.$$ && cp go.sum /tmp/sser-go.sum.$$
go mod tidy
if ! git diff --quiet -- go.mod go.sum; then
  echo "go mod tidy changed go.mod/go.sum; run it and commit:" >&2
  git diff -- go.mod go.sum >&2 || true
  cp /tmp/sser-go.mod.$$ go.mod && cp /tmp/sser-go.sum.$$ go.sum
  fail=1
fi
rm -f /tmp/sser-go.mod.$$ /tmp/sser-go.sum.$$
exit "${fail}"
