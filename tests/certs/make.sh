#!/usr/bin/env bash
# Regenerates the TLS fixtures used by tests/test_ssl.py (committed; valid for 100 years).
#
#   ca.pem / ca.key            the test CA (self-signed)
#   server.pem / server.key    server certificate signed by the CA:
#                              CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1
#   client.pem / client.key    client certificate signed by the CA (CN=oxloop-test-client)
#   other-ca.pem               an unrelated CA (nothing it signed is ever presented)
#   selfsigned.pem / .key      a self-signed server certificate for localhost (not from the CA)
#
# Needs the openssl command-line tool. Run from anywhere: bash tests/certs/make.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
DAYS=36500
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ca() { # name subject
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" -keyout "$1.key" -out "$1.pem" \
    -subj "$2" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2> /dev/null
}

leaf() { # name subject extfile
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$tmp/$1.csr" -subj "$2" 2> /dev/null
  openssl x509 -req -sha256 -days "$DAYS" -in "$tmp/$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -CAserial "$tmp/ca.srl" -out "$1.pem" -extfile "$3" 2> /dev/null
}

ca ca "/O=oxloop tests/CN=oxloop test CA"
ca other-ca "/O=oxloop tests/CN=oxloop unrelated CA"
rm -f other-ca.key

cat > "$tmp/server.ext" << 'X'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
X
cat > "$tmp/client.ext" << 'X'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
X
leaf server "/O=oxloop tests/CN=localhost" "$tmp/server.ext"
leaf client "/O=oxloop tests/CN=oxloop-test-client" "$tmp/client.ext"

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" -keyout selfsigned.key -out selfsigned.pem \
  -subj "/O=oxloop tests/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2> /dev/null
rm -f ca.key  # not needed by the tests; the script makes a new CA each time
echo "tests/certs: regenerated"
