use std::path::PathBuf;

use shared::generate::{
    object_key, put_object, upload_with_progress, write_object, write_v2_parquet_object,
    GenOptions, Manifest,
};
use shared::route::IsoDate;

use super::CliResult;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Write objects under this folder (keys become relative paths).
    #[arg(long, conflicts_with = "bucket", required_unless_present = "bucket")]
    out: Option<PathBuf>,
    /// Upload objects to this S3 bucket.
    #[arg(long)]
    bucket: Option<String>,
    /// Key prefix, e.g. `cloudfront/`.
    #[arg(long, default_value = "")]
    prefix: String,
    /// How many objects to generate.
    #[arg(long, default_value_t = 12)]
    objects: usize,
    /// Data lines per object.
    #[arg(long, default_value_t = 1000)]
    lines: u64,
    /// Instead of --lines: uncompressed size of each object in MiB.
    #[arg(long)]
    size_mib: Option<u64>,
    /// First UTC log date (YYYY-MM-DD).
    #[arg(long, default_value = "2026-11-20")]
    start_date: IsoDate,
    /// Spread objects over this many dates.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Percent of lines dated in the previous hour (across midnight for 00h objects).
    #[arg(long, default_value_t = 5)]
    late_percent: u32,
    /// Random seed: the same seed and options generate the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// CloudFront distribution id in the key names.
    #[arg(long, default_value = "E2QWRUHAPOMQZL")]
    distribution: String,
    /// The last N objects as standard logging v2 Parquet (the same rows, Hive-style keys).
    #[arg(long, default_value_t = 0)]
    v2_parquet: usize,
    /// Write the manifest (rows per date and per object) to this JSON file.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

pub async fn run(args: Args) -> CliResult {
    let parquet_objects = args.v2_parquet.min(args.objects);
    let options = GenOptions {
        seed: args.seed,
        objects: args.objects - parquet_objects,
        lines_per_object: args.lines,
        bytes_per_object: args.size_mib.map(|m| m << 20),
        first_date: args.start_date.0,
        days: args.days,
        late_percent: args.late_percent,
        distribution: args.distribution.clone(),
        prefix: args.prefix.clone(),
    };
    let bar = progress::counter(args.objects as u64, "objects generated");
    let manifest = match (&args.out, &args.bucket) {
        (_, Some(bucket)) => {
            let s3 = shared::aws::s3(&shared::aws::load().await);
            let mut manifest =
                upload_with_progress(&s3, bucket, &options, |n| bar.set_position(n)).await?;
            for index in options.objects..options.objects + parquet_objects {
                let (object, body) = write_v2_parquet_object(&options, index)?;
                put_object(&s3, bucket, &object.key, body).await?;
                manifest.add(object);
                bar.inc(1);
            }
            manifest
        }
        (Some(dir), None) => {
            let mut manifest = Manifest::default();
            for index in 0..options.objects {
                let path = dir.join(object_key(&options, index).0);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                }
                let file = std::fs::File::create(&path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                manifest.add(write_object(
                    &options,
                    index,
                    std::io::BufWriter::new(file),
                )?);
                bar.inc(1);
            }
            for index in options.objects..options.objects + parquet_objects {
                let (object, body) = write_v2_parquet_object(&options, index)?;
                let path = dir.join(&object.key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                }
                std::fs::write(&path, body)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                manifest.add(object);
                bar.inc(1);
            }
            manifest
        }
        (None, None) => unreachable!("clap requires --out or --bucket"),
    };
    bar.finish_and_clear();
    for (date, rows) in &manifest.rows_per_date {
        println!("{date}  {rows:>10} rows");
    }
    println!(
        "{} objects, {} rows",
        manifest.objects.len(),
        manifest.total_rows
    );
    if let Some(path) = &args.manifest {
        std::fs::write(path, serde_json::to_vec_pretty(&manifest)?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(0)
}
