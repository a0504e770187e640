# syntax=docker/dockerfile:1
#
# The sser image: a static binary on distroless, running as the nonroot user
# (65532). No shell or package manager in the final image.
#
#   docker build -t ghcr.io/sser-dev/sser:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/sser-dev/sser:dev .

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Module downloads get their own layer so source edits do not refetch them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
# CGO off gives a fully static binary that needs no libc in the final image.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags='-s -w' -o /out/sser ./cmd/sser

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sser /sser
USER 65532:65532
# 8000: SSE subscribers and the demo page. 7000: peers, publish API, probes, metrics.
EXPOSE 8000 7000
ENTRYPOINT ["/sser"]
CMD ["serve"]
