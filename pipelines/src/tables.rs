//! Source tables shared by several pipelines, declared once.

use tributary_engine::{Column, ColumnType, Schema};

/// Debezium name (and Kafka topic) of the orders table.
pub const ORDERS: &str = "dbserver1.public.orders";

/// `public.orders` as the seed tutorials define it.
pub fn orders_schema() -> Schema {
    Schema::new(vec![
        Column::new("order_id", ColumnType::Int64).not_null(),
        Column::new("customer_id", ColumnType::Int64),
        Column::new("status", ColumnType::String),
        Column::new("quantity", ColumnType::Int32),
        Column::new(
            "price",
            ColumnType::Decimal {
                precision: 10,
                scale: 2,
            },
        ),
        Column::new("created_at", ColumnType::Timestamp),
    ])
}

/// Debezium name (and Kafka topic) of the products table.
pub const PRODUCTS: &str = "dbserver1.public.products";

/// `public.products` as the lakehouse seed defines it.
pub fn products_schema() -> Schema {
    Schema::new(vec![
        Column::new("product_id", ColumnType::Int64).not_null(),
        Column::new("name", ColumnType::String),
        Column::new("category", ColumnType::String),
        Column::new(
            "price",
            ColumnType::Decimal {
                precision: 10,
                scale: 2,
            },
        ),
        Column::new("created_at", ColumnType::Timestamp),
    ])
}

/// Debezium name (and Kafka topic) of the customers table.
pub const CUSTOMERS: &str = "dbserver1.public.customers";

/// `public.customers` as the seed tutorials define it, with the `city` and `country` that
/// `customers-analytics` makes its `location` of.
pub fn customers_schema() -> Schema {
    Schema::new(vec![
        Column::new("id", ColumnType::Int64).not_null(),
        Column::new("first_name", ColumnType::String),
        Column::new("last_name", ColumnType::String),
        Column::new("email", ColumnType::String),
        Column::new("city", ColumnType::String),
        Column::new("country", ColumnType::String),
    ])
}
