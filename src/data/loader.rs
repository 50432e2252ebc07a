//! Parallel decoding and preprocessing into batches, with a bounded prefetch
//! queue and results in input order.
//!
//! A producer thread walks the inputs batch by batch. Each batch is decoded
//! and preprocessed by a dedicated rayon pool, one image per task, straight
//! into the batch's tensor buffer, and then sent through a bounded channel.
//! When the consumer (the backbone) falls behind, the channel fills, the
//! producer blocks and the pool goes idle, leaving the cores to the
//! consumer. At most `queue_depth + 2` batches of tensors exist at once: the
//! queued ones, the one being filled and the one the consumer holds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;

use super::image::{decode_for, DecodeError, DecodeErrorKind};
use super::transform::Preprocess;

/// Threads and prefetch depth of a [`Loader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Decoding threads; 0 means one per available core.
    pub threads: usize,
    /// Finished batches that may wait for the consumer; at least 1.
    pub queue_depth: usize,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            threads: 0,
            queue_depth: 2,
        }
    }
}

/// Consecutive inputs `start..start + len`, preprocessed. The images that
/// decoded are the rows of `tensors`, in input order; the others are listed
/// in `errors`. Every input of the range is in exactly one of the two.
#[derive(Debug)]
pub struct Batch {
    /// Input index of the first item of the batch.
    pub start: usize,
    /// Number of inputs the batch covers, good and failed.
    pub len: usize,
    /// NHWC float32 tensor: `ok.len()` rows of `resolution² × 3` values.
    pub tensors: Vec<f32>,
    /// Input index of each row of `tensors`, ascending.
    pub ok: Vec<usize>,
    /// Input index and cause of each input that failed, ascending.
    pub errors: Vec<(usize, DecodeError)>,
}

impl Batch {
    /// Returns row `row` of `tensors` (a row position, not an input index).
    pub fn row(&self, row: usize) -> &[f32] {
        let row_len = self.tensors.len() / self.ok.len().max(1);
        &self.tensors[row * row_len..(row + 1) * row_len]
    }
}

/// Iterator over [`Batch`]es of `batch_size` inputs (the last may be
/// shorter), in input order, decoded ahead of the consumer on a worker pool.
pub struct Loader {
    receiver: Option<Receiver<Batch>>,
    producer: Option<JoinHandle<()>>,
    produced: Arc<AtomicUsize>,
    batches_left: usize,
}

impl Loader {
    /// Starts loading `paths` with one thread per core and a queue of 2.
    pub fn new(paths: Vec<PathBuf>, preprocess: Preprocess, batch_size: usize) -> Self {
        Self::with_options(paths, preprocess, batch_size, LoaderOptions::default())
    }

    /// Starts loading `paths` in the background.
    ///
    /// # Panics
    /// If `batch_size` is 0 or the worker threads cannot be created.
    pub fn with_options(
        paths: Vec<PathBuf>,
        preprocess: Preprocess,
        batch_size: usize,
        options: LoaderOptions,
    ) -> Self {
        assert!(batch_size > 0, "batch_size must be at least 1");
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            options.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pantry-loader-{i}"))
            .build()
            .expect("failed to start the image decoding threads");
        let (sender, receiver) = bounded(options.queue_depth.max(1));
        let produced = Arc::new(AtomicUsize::new(0));
        let batches_left = paths.len().div_ceil(batch_size);
        let counter = Arc::clone(&produced);
        let producer = std::thread::Builder::new()
            .name("pantry-loader".into())
            .spawn(move || {
                produce(&paths, &preprocess, batch_size, &pool, &sender, &counter);
            })
            .expect("failed to start the image loader thread");
        Loader {
            receiver: Some(receiver),
            producer: Some(producer),
            produced,
            batches_left,
        }
    }

    /// Number of batches finished so far, including those still queued.
    pub fn produced(&self) -> usize {
        self.produced.load(Ordering::SeqCst)
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.batches_left == 0 {
            return None;
        }
        let receiver = self.receiver.as_ref()?;
        match receiver.recv() {
            Ok(batch) => {
                self.batches_left -= 1;
                Some(batch)
            }
            Err(_) => {
                // The producer stopped before sending every batch, which only
                // a panic outside the per-image guard can cause: re-raise it
                // rather than end the iteration with inputs missing.
                let producer = self.producer.take().expect("producer joined only once");
                match producer.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => panic!("image loader stopped with batches outstanding"),
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.batches_left, Some(self.batches_left))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes a producer blocked in `send` return.
        self.receiver = None;
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}

fn produce(
    paths: &[PathBuf],
    preprocess: &Preprocess,
    batch_size: usize,
    pool: &rayon::ThreadPool,
    sender: &Sender<Batch>,
    produced: &AtomicUsize,
) {
    for (index, chunk) in paths.chunks(batch_size).enumerate() {
        let batch = pool.install(|| load_batch(index * batch_size, chunk, preprocess));
        produced.fetch_add(1, Ordering::SeqCst);
        if sender.send(batch).is_err() {
            return; // The loader was dropped.
        }
    }
}

/// Decodes and preprocesses `paths` in parallel on the current rayon pool.
fn load_batch(start: usize, paths: &[PathBuf], preprocess: &Preprocess) -> Batch {
    let row_len = preprocess.tensor_len();
    let mut tensors = vec![0.0f32; paths.len() * row_len];
    let outcomes: Vec<Option<DecodeError>> = tensors
        .par_chunks_mut(row_len)
        .zip(paths.par_iter())
        .map(|(row, path)| load_into(path, preprocess, row).err())
        .collect();

    // Move the good rows together so the tensor has no gaps.
    let mut ok = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for (offset, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            None => {
                let to = ok.len();
                if to != offset {
                    tensors.copy_within(offset * row_len..(offset + 1) * row_len, to * row_len);
                }
                ok.push(start + offset);
            }
            Some(error) => errors.push((start + offset, error)),
        }
    }
    tensors.truncate(ok.len() * row_len);
    Batch {
        start,
        len: paths.len(),
        tensors,
        ok,
        errors,
    }
}

/// Decodes one image into `row`. A panic inside a decoder becomes an error
/// for that file, so one malformed file cannot take the whole run down.
fn load_into(path: &Path, preprocess: &Preprocess, row: &mut [f32]) -> Result<(), DecodeError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let image = decode_for(path, preprocess.resolution)?;
        preprocess.apply_into(&image, row);
        Ok(())
    }));
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(DecodeError {
            path: path.to_path_buf(),
            kind: DecodeErrorKind::Corrupt(format!("the decoder panicked: {message}")),
        })
    })
}
