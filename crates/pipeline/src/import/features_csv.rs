//! Item feature files, for pre-training on data the shop mirror does not
//! describe: `item_id,field,field,…`, a header naming the fields. Every other
//! column is a feature `field=value` of the row's item (`|` separates several
//! values, empty cells are none), named as the shop's own features are
//! (`category`, `designer`, `base`, `price_band`, `kind`): only features the
//! shop's items share by name carry over from a pre-trained model.

use std::path::Path;

use manirec_models::Features;

use crate::{Error, Result};

/// Reads the feature file at `path`.
pub fn read_item_features(path: &Path) -> Result<Features> {
    let input_error = |message: String| Error::Input {
        path: path.display().to_string(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| input_error(format!("cannot open: {e}")))?;
    let header = reader
        .headers()
        .map_err(|e| input_error(format!("cannot read the header: {e}")))?
        .clone();
    let fields: Vec<String> = header.iter().map(|f| f.to_lowercase()).collect();
    let id_aliases = ["item_id", "itemid", "item", "product_id", "movieid", "id"];
    if fields.len() < 2 || !id_aliases.contains(&fields[0].as_str()) {
        return Err(input_error(format!(
            "header {:?}: expected item_id first, then one column per feature \
             (e.g. item_id,category,designer)",
            header.iter().collect::<Vec<_>>().join(",")
        )));
    }
    if let Some(f) = fields.iter().find(|f| f.starts_with("user:")) {
        return Err(input_error(format!(
            "column {f:?}: names starting with \"user:\" are kept for customers' \
             account features; rename it"
        )));
    }
    let mut features = Features::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| input_error(format!("line {}: {e}", line + 2)))?;
        let Some(item) = record.get(0).filter(|i| !i.is_empty()) else {
            return Err(input_error(format!("line {}: no item id", line + 2)));
        };
        for (field, cell) in fields.iter().zip(record.iter()).skip(1) {
            for value in cell.split('|').map(str::trim).filter(|v| !v.is_empty()) {
                features.insert(item, field, value);
            }
        }
    }
    if features.is_empty() {
        return Err(input_error("no item has a feature".into()));
    }
    Ok(features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_after_the_id_is_a_feature() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.csv");
        std::fs::write(
            &path,
            "item_id,category,designer,genres\nq1,8,d2,Comedy|Drama\nq2,,d3,\n",
        )
        .unwrap();
        let f = read_item_features(&path).unwrap();
        assert_eq!(
            f.get("q1"),
            ["category=8", "designer=d2", "genres=Comedy", "genres=Drama"]
        );
        assert_eq!(f.get("q2"), ["designer=d3"]);

        std::fs::write(&path, "category,designer\n8,d2\n").unwrap();
        let err = read_item_features(&path).unwrap_err().to_string();
        assert!(err.contains("expected item_id first"), "{err}");
        std::fs::write(&path, "item_id,category\n").unwrap();
        let err = read_item_features(&path).unwrap_err().to_string();
        assert!(err.contains("no item has a feature"), "{err}");
        std::fs::write(&path, "item_id,User:Country\nq1,de\n").unwrap();
        let err = read_item_features(&path).unwrap_err().to_string();
        assert!(err.contains("kept for customers"), "{err}");
    }
}
