#!/bin/sh
# Registers (or updates) the Debezium PostgreSQL connector with Kafka Connect, then waits until
# its task runs. Idempotent: PUT /connectors/NAME/config creates the connector or replaces its
# configuration, so running it again (or `docker compose up` again) is harmless.
#
# Runs in the `connect-init` service (curlimages/curl: busybox sh + curl). By hand, from the host:
#   curl -X PUT -H 'Content-Type: application/json' \
#        --data @deploy/debezium/register-postgres.json \
#        http://localhost:8083/connectors/shop-postgres/config
set -eu

connect="${CONNECT_URL:-http://connect:8083}"
name="${CONNECTOR_NAME:-shop-postgres}"
config="${CONNECTOR_CONFIG:-/deploy/register-postgres.json}"

# Connect answers /connectors before its group has settled; a PUT during a rebalance gets 409.
attempt=0
while true; do
    attempt=$((attempt + 1))
    code=$(curl -sS -o /tmp/response -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/json' --data @"$config" \
        "$connect/connectors/$name/config" || echo 000)
    case "$code" in
        200|201) echo "connector $name registered (HTTP $code)"; break ;;
    esac
    echo "PUT $connect/connectors/$name/config: HTTP $code: $(cat /tmp/response 2>/dev/null)"
    if [ "$attempt" -ge 30 ]; then
        echo "giving up after $attempt attempts"
        exit 1
    fi
    sleep 2
done

# Wait for the connector's task to be RUNNING (it is then snapshotting or streaming).
i=0
while [ "$i" -lt 90 ]; do
    i=$((i + 1))
    status=$(curl -sS "$connect/connectors/$name/status" || true)
    case "$status" in
        *'"state":"FAILED"'*)
            echo "connector $name failed: $status"
            exit 1
            ;;
    esac
    case "$status" in
        *'"tasks"'*) tasks=${status#*\"tasks\"} ;;
        *) tasks="" ;;
    esac
    case "$tasks" in
        *'"state":"RUNNING"'*)
            echo "connector $name running: $status"
            exit 0
            ;;
    esac
    sleep 2
done
echo "connector $name not running after 180 s: $status"
exit 1
