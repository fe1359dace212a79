# Build: docker build -t pcap-analyzer-mcp-server .
# Run:   docker run -i --rm --network=host --cap-add=NET_RAW --cap-add=NET_ADMIN -v $PWD/pcaps:/data pcap-analyzer-mcp-server
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tshark libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 # only dumpcap may capture, and only with these two capabilities
 && setcap cap_net_raw,cap_net_admin=eip /usr/bin/dumpcap \
 && useradd --create-home --uid 10001 analyzer \
 && mkdir -p /data && chown analyzer /data
COPY --from=build /src/target/release/pcap-analyzer-mcp-server /usr/local/bin/
USER analyzer
ENV PCAP_STORAGE_DIR=/data
VOLUME /data
ENTRYPOINT ["pcap-analyzer-mcp-server"]
