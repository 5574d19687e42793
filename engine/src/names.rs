//! Option values by name: the enums a run is configured with (`--console-format jsonl`,
//! `kafka-start = "committed"`) read and print through their serde names, so the command line,
//! `tributary.toml` and error messages ("unknown variant `x`, expected `table` or `jsonl`")
//! agree.

/// Implements `FromStr` and `Display` for enums through their serde (lower-case) names.
macro_rules! named_values {
    ($($name:ty),* $(,)?) => {$(
        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                serde_json::from_value(serde_json::Value::String(text.to_owned()))
                    .map_err(|e| e.to_string())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(name)) => f.write_str(&name),
                    _ => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}

named_values!(
    crate::sinks::console::ConsoleFormat,
    crate::sinks::console::ConsoleMode,
    crate::sinks::kafka::encode::KafkaSinkFormat,
    crate::sinks::iceberg::DeleteMode,
    crate::sources::kafka::StartFrom,
);

#[cfg(test)]
mod tests {
    use crate::sinks::console::ConsoleFormat;
    use crate::sources::kafka::StartFrom;

    #[test]
    fn values_read_and_print_by_name() {
        assert_eq!("jsonl".parse::<ConsoleFormat>(), Ok(ConsoleFormat::Jsonl));
        assert_eq!(StartFrom::Committed.to_string(), "committed");
        let error = "json".parse::<ConsoleFormat>().unwrap_err();
        assert!(
            error.contains("`table`") && error.contains("`jsonl`"),
            "{error}"
        );
    }
}
