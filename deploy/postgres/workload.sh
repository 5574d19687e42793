#!/usr/bin/env bash
# A never-ending OLTP workload against the `shop` database: about every 0.5 s one transaction
# that inserts an order, moves one or two orders along pending → paid → shipped → delivered,
# sometimes cancels or deletes one, and now and then touches `customers`. Each transaction is
# one commit, so Tributary sees it as one unit (epochs only close between transactions).
#
# Connection settings come from the standard libpq variables (PGHOST, PGUSER, PGPASSWORD,
# PGDATABASE), set by docker-compose.yml. Stop it with `docker compose stop workload`.
set -u

interval="${WORKLOAD_INTERVAL:-0.5}"

until pg_isready -q; do
    echo "workload: waiting for ${PGHOST:-localhost}"
    sleep 1
done

tick=0
failures=0
while true; do
    tick=$((tick + 1))

    # Parts chosen in the shell so each transaction's shape varies.
    extra=""
    roll=$((RANDOM % 10))
    if [ "$roll" -lt 2 ]; then
        # ~20 %: delete a finished order (delivered or cancelled), picked via the index.
        extra="DELETE FROM orders WHERE order_id = (
                   SELECT order_id FROM orders
                   WHERE status IN ('delivered', 'cancelled')
                     AND order_id >= (SELECT floor(random() * max(order_id)) FROM orders)
                   ORDER BY order_id LIMIT 1);"
    elif [ "$roll" -lt 3 ]; then
        # ~10 %: cancel a pending order.
        extra="UPDATE orders SET status = 'cancelled' WHERE order_id = (
                   SELECT order_id FROM orders
                   WHERE status = 'pending'
                     AND order_id >= (SELECT floor(random() * max(order_id)) FROM orders)
                   ORDER BY order_id LIMIT 1);"
    fi
    customers=""
    if [ $((RANDOM % 10)) -eq 0 ]; then
        # ~10 %: a new customer, and an existing one changes their email.
        customers="INSERT INTO customers (first_name, last_name, email, city, country)
                       VALUES ('New', 'Customer', 'new' || $tick || '-' || $RANDOM || '@example.com',
                               'Lisbon', 'PT');
                   UPDATE customers SET email = 'changed' || $tick || '@example.com'
                       WHERE id = 1 + floor(random() * 200)::bigint;"
    fi

    if ! psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
BEGIN;
INSERT INTO orders (customer_id, status, quantity, price, created_at)
    VALUES (1 + floor(random() * 200)::bigint, 'pending', 1 + floor(random() * 5)::int,
            round((5 + random() * 195)::numeric, 2), now()::timestamp);
UPDATE orders
   SET status = CASE status WHEN 'pending' THEN 'paid'
                            WHEN 'paid' THEN 'shipped'
                            ELSE 'delivered' END
 WHERE order_id IN (
       SELECT order_id FROM orders
        WHERE status IN ('pending', 'paid', 'shipped')
          AND order_id >= (SELECT floor(random() * max(order_id)) FROM orders)
        ORDER BY order_id LIMIT $((1 + RANDOM % 2)));
$extra
$customers
COMMIT;
SQL
    then
        failures=$((failures + 1))
        echo "workload: transaction $tick failed (${failures} failures so far); retrying"
        sleep 2
    fi

    if [ $((tick % 120)) -eq 0 ]; then
        echo "workload: $tick transactions, $failures failed"
    fi
    sleep "$interval"
done
