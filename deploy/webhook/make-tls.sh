#!/bin/sh
# Make the webhook's TLS: a private CA and a serving certificate for the webhook Service,
# stored as the secret numanet-webhook-tls, and the CA set as the caBundle of the
# MutatingWebhookConfiguration numanet-webhook. Run after `kubectl apply -k`.
#
#   deploy/webhook/make-tls.sh [--namespace NS] [--out DIR] [--days N] [--no-apply]
#
# --no-apply only writes ca.crt, tls.crt and tls.key to DIR (default: a temp dir).
# Needs openssl, and kubectl unless --no-apply. Run it again to rotate: the webhook picks
# up the new certificate without a restart.
set -eu

namespace=numanet-system
out=
days=825
apply=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --namespace) namespace=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --days) days=$2; shift 2 ;;
        --no-apply) apply=no; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "make-tls.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
service=numanet-webhook
if [ -z "$out" ]; then
    out=$(mktemp -d)
    [ "$apply" = yes ] && trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=numanet-webhook-ca" -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$service.$namespace.svc" -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
cat > "$out/ext.cnf" <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local
EXT
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days "$days" -extfile "$out/ext.cnf" -out "$out/tls.crt" 2>/dev/null
rm -f "$out/tls.csr" "$out/ext.cnf" "$out/ca.srl"
# The CA key is not needed again: a rotation makes a new CA and caBundle.
rm -f "$out/ca.key"
chmod 644 "$out/ca.crt" "$out/tls.crt"

if [ "$apply" = no ]; then
    echo "wrote $out/ca.crt $out/tls.crt $out/tls.key"
    exit 0
fi
kubectl -n "$namespace" create secret tls numanet-webhook-tls \
    --cert="$out/tls.crt" --key="$out/tls.key" --dry-run=client -o yaml | kubectl apply -f -
ca_bundle=$(base64 < "$out/ca.crt" | tr -d '\n')
kubectl patch mutatingwebhookconfiguration numanet-webhook --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca_bundle\"}]"
echo "numanet webhook TLS installed in $namespace; caBundle set"
