#!/usr/bin/env bash
# Makes throwaway certificates for the TLS tests in directory $1: a CA, a server certificate for
# localhost/127.0.0.1, a client certificate from the same CA, and a client certificate from an
# unrelated CA. Nothing here is ever used outside the test that made it.
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" >/dev/null 2>&1; }

make_ca() {  # make_ca NAME
  quiet openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.crt"
}
make_leaf() {  # make_leaf NAME CA EXTENSIONS
  quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr"
  printf '%s\n' "$3" >"$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.crt"
}

make_ca ca
make_ca other-ca
make_leaf server ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
make_leaf client ca "extendedKeyUsage=clientAuth"
make_leaf client2 ca "extendedKeyUsage=clientAuth"
make_leaf stranger other-ca "extendedKeyUsage=clientAuth"
