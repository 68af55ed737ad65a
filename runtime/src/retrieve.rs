//! `hybrid-runtime retrieve`: search one index revision from the command line and print the
//! passages with their citations. The same path `serve` will take per request (embed the query,
//! search the loaded revision), without HTTP, for debugging an index and for the local demo.

use crate::embed::Embedder;
use crate::index::revision::LoadedRevision;
use serde::Serialize;
use std::path::PathBuf;

/// Most passages a query may ask for on the command line; more is never useful in a prompt.
use hybrid_contract::limits::MAX_TOP_K;

#[derive(Debug, Clone, clap::Args)]
pub struct RetrieveArgs {
    /// Index revision archive: a local path, file:// or s3:// URI (the `location` in the index
    /// Job's result).
    #[arg(long)]
    pub index: String,
    /// Embedding model directory; must be the model the index was built with.
    #[arg(long, env = "HYBRID_EMBEDDER_DIR")]
    pub embedder: PathBuf,
    /// Passages to return.
    #[arg(long, default_value_t = 4)]
    pub top_k: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Scratch directory the revision is unpacked into (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub scratch: PathBuf,
    /// Where the embedder computes: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t)]
    pub device: crate::device::DeviceChoice,
    /// The question.
    pub query: String,
}

/// One retrieved passage with what a citation needs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Citation {
    pub rank: usize,
    pub score: f32,
    pub document_id: String,
    pub chunk_id: String,
    pub title: String,
    pub source_uri: String,
    pub text: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveOutput {
    pub revision: String,
    pub query: String,
    pub passages: Vec<Citation>,
}

pub async fn retrieve(args: &RetrieveArgs) -> anyhow::Result<RetrieveOutput> {
    anyhow::ensure!(
        (1..=MAX_TOP_K).contains(&args.top_k),
        "--top-k must be between 1 and {MAX_TOP_K}, got {}",
        args.top_k
    );
    anyhow::ensure!(!args.query.trim().is_empty(), "the query is empty");
    let placement = crate::device::select(args.device, "--device")?;
    crate::device::log_placement("retrieve", args.device, &placement);
    let embedder = Embedder::load_for(&args.embedder, &placement)?;
    let revision = LoadedRevision::open(&args.index, &args.scratch).await?;
    let query = embedder.embed(&[args.query.as_str()])?;
    let vector = query
        .first()
        .ok_or_else(|| anyhow::anyhow!("the embedder returned no vector"))?;
    let hits = revision.search(vector, args.top_k)?;
    let passages = hits
        .into_iter()
        .enumerate()
        .map(|(i, hit)| Citation {
            rank: i + 1,
            score: hit.score,
            document_id: hit.payload.document_id,
            chunk_id: hit.payload.chunk_id,
            title: hit.payload.title,
            source_uri: hit.payload.source_uri,
            text: hit.payload.text,
        })
        .collect();
    Ok(RetrieveOutput {
        revision: revision.revision().to_owned(),
        query: args.query.clone(),
        passages,
    })
}

/// Runs the subcommand and returns the process exit code.
pub fn main(args: &RetrieveArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(retrieve(args)) {
        Ok(out) if args.json => match serde_json::to_string_pretty(&out) {
            Ok(json) => {
                println!("{json}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Ok(out) => {
            println!("index revision {}  query: {}\n", out.revision, out.query);
            for p in &out.passages {
                let excerpt: String = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
                let excerpt: String = excerpt.chars().take(280).collect();
                println!(
                    "[{}] {} (score {:.3}, {})\n    {}…\n",
                    p.rank, p.title, p.score, p.source_uri, excerpt
                );
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
