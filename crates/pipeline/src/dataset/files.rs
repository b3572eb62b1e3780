//! Rows of a [`Table`] as Parquet or CSV bytes.
//!
//! Parquet columns, as every reader of the field sees them (pyarrow, pandas,
//! Polars, DuckDB, Spark): `user_id`, `item_id`, `interaction_type`, `source`
//! strings (dictionary-encoded on disk), `rating` double, `timestamp` int64 (Unix
//! seconds, as in the CSV files and the store), `synthetic` boolean, `quantity`
//! int64. Ids and times Zstandard-compressed. The bytes depend on the rows only: no clock, no
//! host name, so an equal dataset has an equal checksum.

use std::io::Write;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::types::{UInt16Type, UInt32Type};
use arrow_array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    UInt16Array, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::table::{Dict, Row, Table};
use crate::export::{csv_field, Rating, CSV_HEADER};
use crate::{Error, Result};

/// Rows per Parquet record batch (bounds the memory of one batch's arrays).
const BATCH_ROWS: usize = 256 * 1024;

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// The seed's CSV, with a `synthetic` column.
    Csv,
}

impl Format {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown format {s:?}; expected csv or parquet")),
        }
    }
}

/// A table's dictionaries as Arrow arrays, built once and shared by every
/// batch and every file encoded from the table.
pub struct Values {
    users: ArrayRef,
    items: ArrayRef,
    kinds: ArrayRef,
    sources: ArrayRef,
}

fn values(dict: &Dict) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(dict.values()))
}

fn schema() -> Arc<Schema> {
    let dict32 = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
    let dict16 = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("user_id", dict32.clone(), false),
        Field::new("item_id", dict32, false),
        Field::new("rating", DataType::Float64, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("interaction_type", dict16.clone(), false),
        Field::new("source", dict16, false),
        Field::new("synthetic", DataType::Boolean, false),
        Field::new("quantity", DataType::Int64, false),
    ]))
}

/// Index of `timestamp` among the columns.
const TIMESTAMP_COLUMN: usize = 3;

/// The columns worth compressing: ids and times. The others are a few
/// distinct values, dictionary- and run-length-encoded to almost nothing, and
/// Zstandard would gain little (2.6 % of a file on 1M generated rows) for a
/// compressor and decompressor created per column chunk, that is per row
/// group, a day: 5 of 8 of the codecs a build makes.
const COMPRESSED_COLUMNS: [&str; 3] = ["user_id", "item_id", "timestamp"];

/// The string columns, whose minimum and maximum the writer would compare on
/// every row: a row group is a day, and every day holds users, items and
/// types from across the whole range, so their bounds would prune nothing.
/// The timestamp's bounds stay: increments find a parent's days by them.
const UNSTATED_COLUMNS: [&str; 4] = ["user_id", "item_id", "interaction_type", "source"];

fn properties() -> Result<WriterProperties> {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(1).map_err(parquet_error)?);
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("manirec".into());
    for column in COMPRESSED_COLUMNS {
        builder = builder.set_column_compression(ColumnPath::from(column), zstd);
    }
    for column in UNSTATED_COLUMNS {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    Ok(builder.build())
}

fn parquet_error(e: impl std::fmt::Display) -> Error {
    Error::Data(format!("writing Parquet: {e}"))
}

impl Values {
    /// The dictionaries of `table`.
    pub fn of(table: &Table) -> Values {
        Values {
            users: values(&table.users),
            items: values(&table.items),
            kinds: values(&table.kinds),
            sources: values(&table.sources),
        }
    }
}

/// The rows as a Parquet file.
pub fn parquet_bytes(table: &Table, rows: &[Row]) -> Result<Vec<u8>> {
    parquet_groups(&Values::of(table), &[rows])
}

/// The row groups one piece of rows makes (none when it is empty).
pub fn row_groups_of(rows: usize) -> usize {
    rows.div_ceil(ROW_GROUP_ROWS)
}

/// Pieces of rows as one Parquet file, each piece in row groups of its own
/// ([`row_groups_of`]): a piece's row groups are the bytes it would make as a
/// file alone, so they can be spliced anywhere.
pub fn parquet_groups(values: &Values, pieces: &[&[Row]]) -> Result<Vec<u8>> {
    let schema = schema();
    let props = properties()?;
    // Readers get plain string columns, not categoricals: the Arrow schema is not
    // embedded, the Parquet schema alone says what the columns are.
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(Vec::new(), schema.clone(), options)
        .map_err(parquet_error)?;
    for chunk in pieces.iter().flat_map(|rows| {
        // A piece's batches start at its first row, and it ends its row group.
        rows.chunks(BATCH_ROWS)
            .map(Some)
            .chain(std::iter::once(None))
    }) {
        let Some(chunk) = chunk else {
            writer.flush().map_err(parquet_error)?;
            continue;
        };
        let batch = record_batch(values, chunk)?;
        writer.write(&batch).map_err(parquet_error)?;
    }
    writer.into_inner().map_err(parquet_error)
}

/// Rows as one record batch of the files' schema, their dictionaries shared.
fn record_batch(values: &Values, rows: &[Row]) -> Result<RecordBatch> {
    let dict32 = |keys: UInt32Array, values: &ArrayRef| -> Result<ArrayRef> {
        Ok(Arc::new(
            DictionaryArray::<UInt32Type>::try_new(keys, values.clone()).map_err(parquet_error)?,
        ))
    };
    let dict16 = |keys: UInt16Array, values: &ArrayRef| -> Result<ArrayRef> {
        Ok(Arc::new(
            DictionaryArray::<UInt16Type>::try_new(keys, values.clone()).map_err(parquet_error)?,
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        dict32(rows.iter().map(|r| r.user).collect(), &values.users)?,
        dict32(rows.iter().map(|r| r.item).collect(), &values.items)?,
        Arc::new(rows.iter().map(|r| r.rating).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.timestamp).collect::<Int64Array>()),
        dict16(rows.iter().map(|r| r.kind).collect(), &values.kinds)?,
        dict16(rows.iter().map(|r| r.source).collect(), &values.sources)?,
        Arc::new(
            rows.iter()
                .map(|r| Some(r.synthetic))
                .collect::<BooleanArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.quantity).collect::<Int64Array>()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(parquet_error)
}

/// Whether every column chunk of a file is encoded as this build encodes it
/// (its compression, and statistics or none): only such row groups may be
/// spliced into a new file, or an increment's bytes would differ from those a
/// full build of the same data writes.
pub fn check_encoding(metadata: &ParquetMetaData) -> Result<()> {
    let props = properties()?;
    for group in metadata.row_groups() {
        for column in group.columns() {
            let path = column.column_path();
            let stated = column.statistics().is_some();
            let states = props.statistics_enabled(path) != EnabledStatistics::None;
            if column.compression() != props.compression(path) || stated != states {
                return Err(Error::Data(format!(
                    "column {path} was encoded by another build of manirec ({}{})",
                    column.compression(),
                    if stated { ", with statistics" } else { "" }
                )));
            }
        }
    }
    Ok(())
}

/// The most rows in one Parquet row group (the writer's default).
pub const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Row groups of an encoded Parquet file, to be copied into another.
pub struct Groups<'a> {
    /// The encoded file.
    pub file: &'a Bytes,
    /// Its metadata, page indexes included.
    pub metadata: &'a ParquetMetaData,
    /// The row groups to copy, by index.
    pub range: Range<usize>,
}

/// A Parquet file's metadata with its page indexes, read from its footer.
pub fn parquet_metadata(file: &Bytes) -> Result<ParquetMetaData> {
    ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(file)
        .map_err(|e| Error::Data(format!("reading a Parquet footer: {e}")))
}

/// The minimum timestamp of every row group of a dataset file (the column's
/// statistics), in file order.
pub fn row_group_first_timestamps(metadata: &ParquetMetaData) -> Result<Vec<i64>> {
    metadata
        .row_groups()
        .iter()
        .map(|rg| match rg.column(TIMESTAMP_COLUMN).statistics() {
            Some(Statistics::Int64(s)) => s
                .min_opt()
                .copied()
                .ok_or_else(|| Error::Data("a row group without timestamp statistics".into())),
            _ => Err(Error::Data(
                "a row group without timestamp statistics".into(),
            )),
        })
        .collect()
}

/// Appends the rows of `groups` to `table`, their strings interned in its
/// dictionaries (call [`Table::renumber`] after the last), every row's id set
/// to `id`: rows read back from a dataset file have lost theirs, and are older
/// than any row written since.
pub fn read_groups(
    file: &Bytes,
    metadata: &ArrowReaderMetadata,
    range: Range<usize>,
    id: i64,
    table: &mut Table,
) -> Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let error = |e: &dyn std::fmt::Display| Error::Data(format!("reading a dataset file: {e}"));
    // The footer parsed once per file, not once per period read.
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), metadata.clone())
        .with_row_groups(range.collect())
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| error(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| error(&e))?;
        let column = |i: usize| batch.column(i).as_any();
        let strings = |i: usize| {
            column(i)
                .downcast_ref::<StringArray>()
                .ok_or_else(|| error(&format!("column {i} is not a string column")))
        };
        let (users, items, kinds, sources) = (strings(0)?, strings(1)?, strings(4)?, strings(5)?);
        let typed = || -> Option<(&Float64Array, &Int64Array, &BooleanArray, &Int64Array)> {
            Some((
                column(2).downcast_ref()?,
                column(TIMESTAMP_COLUMN).downcast_ref()?,
                column(6).downcast_ref()?,
                column(7).downcast_ref()?,
            ))
        };
        let (ratings, times, synthetic, quantities) =
            typed().ok_or_else(|| error(&"unexpected column types"))?;
        for i in 0..batch.num_rows() {
            let (kind, source) = (
                table.kinds.intern(kinds.value(i)),
                table.sources.intern(sources.value(i)),
            );
            table.rows.push(Row {
                id,
                timestamp: times.value(i),
                rating: ratings.value(i),
                quantity: quantities.value(i),
                user: table.users.intern(users.value(i)),
                item: table.items.intern(items.value(i)),
                kind: u16::try_from(kind).map_err(|_| error(&"too many interaction types"))?,
                source: u16::try_from(source).map_err(|_| error(&"too many sources"))?,
                synthetic: synthetic.value(i),
            });
        }
    }
    Ok(())
}

/// One Parquet file made of the row groups of others, in order, their column
/// chunks copied byte for byte (nothing is decoded or re-encoded); only the
/// footer is written anew. Files spliced from equal row groups are equal.
pub fn splice(parts: &[Groups<'_>]) -> Result<Vec<u8>> {
    let descriptor = ArrowSchemaConverter::new()
        .convert(&schema())
        .map_err(parquet_error)?;
    // The column chunks plus room for the footer, allocated once.
    let chunks: i64 = parts
        .iter()
        .flat_map(|p| {
            p.range
                .clone()
                .map(|i| p.metadata.row_group(i).compressed_size())
        })
        .sum();
    let footer: usize = parts.iter().map(|p| p.range.len() * 4096).sum();
    let mut writer = SerializedFileWriter::new(
        Vec::with_capacity(chunks as usize + footer + 4096),
        descriptor.root_schema_ptr(),
        Arc::new(properties()?),
    )
    .map_err(parquet_error)?;
    for part in parts {
        let page_index = part.metadata.page_index();
        for rg_idx in part.range.clone() {
            let rg = part.metadata.row_group(rg_idx);
            let mut out = writer.next_row_group().map_err(parquet_error)?;
            for (col_idx, column) in rg.columns().iter().enumerate() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: rg.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: page_index
                        .and_then(|pi| pi.column_index(rg_idx, col_idx))
                        .cloned(),
                    offset_index: page_index
                        .and_then(|pi| pi.offset_index(rg_idx, col_idx))
                        .cloned(),
                };
                out.append_column(part.file, close).map_err(parquet_error)?;
            }
            out.close().map_err(parquet_error)?;
        }
    }
    writer.into_inner().map_err(parquet_error)
}

/// The rows as the seed's CSV (`user_id,item_id,rating,timestamp,interaction_type,synthetic`).
pub fn csv_bytes(table: &Table, rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 64 + 64);
    out.extend_from_slice(CSV_HEADER.as_bytes());
    out.push(b'\n');
    for r in rows {
        // Writing into a Vec cannot fail.
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            csv_field(table.users.get(r.user)),
            csv_field(table.items.get(r.item)),
            Rating(r.rating),
            r.timestamp,
            csv_field(table.kinds.get(r.kind as u32)),
            u8::from(r.synthetic)
        );
    }
    out
}

/// The rows in `format`.
pub fn encode(table: &Table, rows: &[Row], format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Parquet => parquet_bytes(table, rows),
        Format::Csv => Ok(csv_bytes(table, rows)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_encoded_as_this_build_encodes_them_may_be_spliced() {
        let mut table = Table::default();
        for (i, user) in ["amy", "bo", "cy"].into_iter().enumerate() {
            table.rows.push(Row {
                id: i as i64 + 1,
                timestamp: 1_700_000_000 + i as i64,
                rating: 1.0,
                quantity: 1,
                user: table.users.intern(user),
                item: table.items.intern("p1"),
                kind: table.kinds.intern("view") as u16,
                source: table.sources.intern("realtime") as u16,
                synthetic: false,
            });
        }
        let ours = Bytes::from(parquet_bytes(&table, &table.rows).unwrap());
        check_encoding(&parquet_metadata(&ours).unwrap()).unwrap();

        // The same rows as an earlier build wrote them: every column
        // compressed, every column with statistics.
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
            .build();
        let batch = record_batch(&Values::of(&table), &table.rows).unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        let theirs = Bytes::from(writer.into_inner().unwrap());
        let why = check_encoding(&parquet_metadata(&theirs).unwrap()).unwrap_err();
        assert!(why.to_string().contains("another build"), "{why}");
    }
}
