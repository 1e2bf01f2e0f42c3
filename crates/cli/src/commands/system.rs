use std::process::ExitCode;

use crate::client::{Client, ClientError};
use crate::output::Output;

pub async fn run(client: &Client, out: &Output) -> Result<ExitCode, ClientError> {
    let info: serde_json::Value = client.get("/system").await?;
    if out.json {
        out.json(&info);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |k: &str| {
        info[k]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| info[k].to_string())
    };
    println!("version        {}", s("version"));
    println!(
        "driver         {}{}",
        s("driver"),
        if info["isolated"] == false {
            " (NO isolation)"
        } else {
            ""
        }
    );
    println!("data dir       {}", s("data_dir"));
    println!("schema         v{}", s("schema_version"));
    println!(
        "sandboxes      {} running / {} total",
        info["sandboxes"]["running"], info["sandboxes"]["total"]
    );
    let st = &info["storage"];
    let gib = |k: &str| st[k].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    println!(
        "storage        {} — pool {:.1} of {:.1} GiB used",
        st["kind"].as_str().unwrap_or("?"),
        gib("pool_used_bytes"),
        gib("pool_total_bytes")
    );
    println!(
        "               {}",
        st["reason"].as_str().unwrap_or_default()
    );
    println!("uptime         {}s", info["uptime_secs"]);
    if let Some(notes) = info["driver_notes"].as_array() {
        println!("driver notes:");
        for n in notes {
            println!("  - {}", n.as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}
