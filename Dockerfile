# One image with every lb binary: docker build -t lb .
FROM rust:1.95-slim AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lb-bins \
 && mkdir /out \
 && find target/release -maxdepth 1 -type f -name 'lb-*' -perm -u+x -exec cp {} /out/ \;

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65534
ENTRYPOINT ["/usr/local/bin/lb-controller"]
