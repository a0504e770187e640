# Fuzzing: the parsers and encoders. The seed corpora run with every `go test`.

FUZZTIME ?= 30s

.PHONY: fuzz
fuzz: ## Fuzz every parser and encoder for FUZZTIME each (default 30s).
	@set -e; for target in FuzzDecodeEvents FuzzAppendFrame FuzzParsePosition FuzzAcceptsGzip FuzzGzStream FuzzParseWSMessage FuzzWSReadMessage FuzzWSEventFrame; do \
	  echo "fuzz pkg/sser $$target"; $(GO) test -run XXX -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./pkg/sser; \
	done; \
	echo "fuzz pkg/client FuzzParser"; $(GO) test -run XXX -fuzz '^FuzzParser$$' -fuzztime $(FUZZTIME) ./pkg/client; \
	echo "fuzz pkg/auth FuzzCredential"; $(GO) test -run XXX -fuzz '^FuzzCredential$$' -fuzztime $(FUZZTIME) ./pkg/auth; \
	echo "fuzz internal/app FuzzInternalURL"; $(GO) test -run XXX -fuzz '^FuzzInternalURL$$' -fuzztime $(FUZZTIME) ./internal/app
