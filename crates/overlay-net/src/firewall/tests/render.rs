//! Renders the JSON ruleset we generate in a compact form of nft's own
//! syntax, so tests can state rules the way people read them:
//! `oifname shl-a counter accept`. Covers only what ruleset.rs produces.

use nftables::schema::Nftables;
use serde_json::Value;

/// The rules added to `chain` of `table`, rendered.
pub fn chain_rules(nftables: &Nftables, table: &str, chain: &str) -> Vec<String> {
    let document = serde_json::to_value(nftables).unwrap();
    document["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|command| command.get("add").and_then(|add| add.get("rule")))
        .filter(|rule| rule["table"] == table && rule["chain"] == chain)
        .map(|rule| {
            rule["expr"]
                .as_array()
                .unwrap()
                .iter()
                .map(statement)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `family table name hook prio policy` of every added chain.
pub fn chains(nftables: &Nftables) -> Vec<String> {
    let document = serde_json::to_value(nftables).unwrap();
    document["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|command| command.get("add").and_then(|add| add.get("chain")))
        .map(|c| {
            let mut line = format!(
                "{} {} {}",
                text(&c["family"]),
                text(&c["table"]),
                text(&c["name"])
            );
            if !c["hook"].is_null() {
                line += &format!(" {} {} {}", text(&c["hook"]), c["prio"], text(&c["policy"]));
            }
            line
        })
        .collect()
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string())
}

fn statement(stmt: &Value) -> String {
    let (key, body) = stmt.as_object().unwrap().iter().next().unwrap();
    match key.as_str() {
        "match" => {
            let op = match body["op"].as_str().unwrap() {
                "==" | "in" => String::new(),
                other => format!("{other} "),
            };
            format!(
                "{} {op}{}",
                expression(&body["left"]),
                expression(&body["right"])
            )
        }
        "accept" | "drop" | "masquerade" | "counter" => key.clone(),
        "jump" => format!("jump {}", text(&body["target"])),
        "vmap" => format!(
            "{} vmap {}",
            expression(&body["key"]),
            expression(&body["data"])
        ),
        "reject" => "reject".to_string(),
        "dnat" | "snat" => match body.get("port") {
            Some(port) => format!("{key} to {}:{port}", expression(&body["addr"])),
            None => format!("{key} to {}", expression(&body["addr"])),
        },
        other => panic!("render does not know statement {other}: {stmt}"),
    }
}

fn expression(expr: &Value) -> String {
    match expr {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(expression).collect::<Vec<_>>().join(","),
        Value::Object(map) => {
            let (key, body) = map.iter().next().unwrap();
            match key.as_str() {
                "meta" => text(&body["key"]),
                "payload" => format!("{} {}", text(&body["protocol"]), text(&body["field"])),
                "ct" => format!("ct {}", text(&body["key"])),
                "fib" => format!("fib {} type", expression(&body["flags"])),
                "prefix" => format!("{}/{}", text(&body["addr"]), body["len"]),
                "set" => {
                    let items: Vec<String> = body
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|item| match item.as_array() {
                            // A map element: [key, value].
                            Some(pair) => {
                                format!("{}: {}", expression(&pair[0]), expression(&pair[1]))
                            }
                            None => expression(item),
                        })
                        .collect();
                    format!("{{ {} }}", items.join(", "))
                }
                "jump" => format!("jump {}", text(&body["target"])),
                "map" => format!("{} map {}", expression(&body["key"]), expression(&body["data"])),
                "numgen" => format!("numgen {} mod {}", text(&body["mode"]), body["mod"]),
                other => panic!("render does not know expression {other}: {expr}"),
            }
        }
        other => panic!("render does not know {other}"),
    }
}
