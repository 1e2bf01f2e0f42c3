//! Tables for humans, JSON for scripts, and errors on stderr.

use std::time::Duration;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::client::ClientError;

pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn json<T: Serialize>(&self, value: &T) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into())
        );
    }

    /// Prints `items` as JSON, as a table, or a hint of what to do when there are none.
    pub fn list<T: Serialize>(
        &self,
        items: &[T],
        empty_hint: &str,
        header: &[&str],
        row: impl Fn(&T) -> Vec<String>,
    ) {
        if self.json {
            self.json(&items);
        } else if items.is_empty() {
            println!("{empty_hint}");
        } else {
            self.table(header, items.iter().map(row).collect());
        }
    }

    fn table(&self, header: &[&str], rows: Vec<Vec<String>>) {
        let mut table = Table::new();
        table
            .load_preset(UTF8_BORDERS_ONLY)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(header);
        for row in rows {
            table.add_row(row);
        }
        println!("{table}");
    }

    /// A spinner on stderr while something is waited for (hidden when not a terminal).
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }
}

pub fn print_error(e: &ClientError) {
    eprintln!("error: {e}");
}

/// A short age ("42s", "3m", "5h", "2d") since `at`.
pub fn age(at: chrono::DateTime<chrono::Utc>) -> String {
    match (chrono::Utc::now() - at).num_seconds().max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
