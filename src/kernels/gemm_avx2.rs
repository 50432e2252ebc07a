//! AVX2+FMA matrix product `C = A * B + bias (+ residual)`, clamped, for 1x1
//! convolutions.
//!
//! `B` (the weights) is packed once at load time into panels of [`NR`]
//! columns, `[panel][k][NR]`, zero-padded past `n`, so the micro-kernel reads
//! it sequentially. The micro-kernel keeps an [`MR`]x[`NR`] tile of `C` in
//! twelve registers and broadcasts `A` (the activations, row-major `[m, k]`)
//! one value at a time. Blocking: [`MC`] rows of `A` by [`KC`] columns stay in
//! L2 while a `KC`x`NR` slice of a `B` panel (16 KiB) stays in L1.

use std::arch::x86_64::*;
use std::ops::Range;

/// Columns of a `B` panel and of a micro-tile (two AVX vectors).
pub(super) const NR: usize = 16;
/// Rows of a micro-tile.
const MR: usize = 6;
/// Depth of one `k` block.
const KC: usize = 256;
/// Rows of `A` per block.
const MC: usize = 96;
/// Steps of `k` per iteration of the micro-kernel's loop.
const UNROLL: usize = 4;

/// Packs row-major `[k, n]` weights into zero-padded panels of `NR` columns.
pub(super) fn pack_b(weight: &[f32], k: usize, n: usize) -> Vec<f32> {
    assert_eq!(weight.len(), k * n, "weight length");
    let panels = n.div_ceil(NR);
    let mut packed = vec![0.0; panels * k * NR];
    for panel in 0..panels {
        for row in 0..k {
            for j in 0..NR.min(n - panel * NR) {
                packed[(panel * k + row) * NR + j] = weight[row * n + panel * NR + j];
            }
        }
    }
    packed
}

/// Layout of the rows of `C` and of the residual: groups of `rows`
/// consecutive rows of `n` values, each group starting `stride` values after
/// the previous one. A padded image stores each image row as a group.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowGroups {
    pub rows: usize,
    pub stride: usize,
}

/// Operands of one product; slices are checked by [`gemm`].
pub(super) struct Operands<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Row-major `[m, k]`.
    pub a: &'a [f32],
    /// Output of [`pack_b`] for `[k, n]` weights.
    pub packed_b: &'a [f32],
    /// `n` rounded up to a multiple of `NR`, zero-padded.
    pub bias: &'a [f32],
    /// Laid out like `C`, added before clamping.
    pub residual: Option<&'a [f32]>,
    /// Clamp bounds applied last.
    pub lo: f32,
    pub hi: f32,
    /// Layout of `C`; `None` for row-major `[m, n]`.
    pub groups: Option<RowGroups>,
    /// Panels (column blocks of `NR`) to compute; the other columns of `C`
    /// are not accessed.
    pub panels: Range<usize>,
}

/// Computes `c = clamp(a * b + bias + residual, lo, hi)` into the columns
/// `ops.panels` of `c`, laid out as `ops.groups` describes.
///
/// # Safety
/// The CPU must support AVX2 and FMA. `c` must be valid for writes of
/// `c_len` floats, and no other thread may access the columns computed here
/// while the call runs.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm(ops: &Operands<'_>, c: *mut f32, c_len: usize) {
    let Operands { m, k, n, .. } = *ops;
    let panels = n.div_ceil(NR);
    assert!(ops.panels.end <= panels, "panel range past the matrix");
    assert_eq!(ops.a.len(), m * k, "A length");
    assert_eq!(ops.packed_b.len(), panels * k * NR, "packed B length");
    assert_eq!(ops.bias.len(), panels * NR, "bias length");
    assert!(k > 0, "empty inner dimension");
    if m == 0 {
        return;
    }
    // Row-major `C` is cut into groups of `MC` rows, which bounds the rows
    // of `A` that a block keeps in cache.
    let groups = ops.groups.unwrap_or(RowGroups {
        rows: MC.min(m),
        stride: MC.min(m) * n,
    });
    assert!(
        groups.rows > 0 && groups.stride >= groups.rows * n,
        "invalid row groups"
    );
    let group_count = m.div_ceil(groups.rows);
    let last_rows = m - (group_count - 1) * groups.rows;
    let needed = (group_count - 1) * groups.stride + last_rows * n;
    assert!(c_len >= needed, "C length {c_len} < {needed}");
    if let Some(residual) = ops.residual {
        assert!(residual.len() >= needed, "residual length");
    }
    let residual = ops.residual.map(|r| r.as_ptr());
    let tile_args = TileArgs {
        lda: k,
        ldc: n,
        lo: _mm256_set1_ps(ops.lo),
        hi: _mm256_set1_ps(ops.hi),
    };
    let groups_per_block = (MC / groups.rows).max(1);
    for g0 in (0..group_count).step_by(groups_per_block) {
        let g1 = (g0 + groups_per_block).min(group_count);
        for k0 in (0..k).step_by(KC) {
            let depth = KC.min(k - k0);
            let phase = Phase {
                first: k0 == 0,
                last: k0 + depth == k,
            };
            for panel in ops.panels.clone() {
                let cols = NR.min(n - panel * NR);
                let b = ops.packed_b.as_ptr().wrapping_add((panel * k + k0) * NR);
                let bias = ops.bias.as_ptr().wrapping_add(panel * NR);
                for g in g0..g1 {
                    let first_row = g * groups.rows;
                    let rows = groups.rows.min(m - first_row);
                    // A panel of at most 8 columns needs one vector per row,
                    // so its tiles take twice the rows.
                    let narrow = cols <= 8;
                    let max_height = if narrow { 2 * MR } else { MR };
                    // Even tile heights: 7 rows become 4 + 3, not 6 + 1, so
                    // that every tile has enough independent accumulators.
                    let tiles = rows.div_ceil(max_height);
                    let mut r = 0;
                    for t in 0..tiles {
                        let height = rows / tiles + usize::from(t < rows % tiles);
                        let row = first_row + r;
                        let offset = g * groups.stride + r * n + panel * NR;
                        let ptrs = TilePtrs {
                            a: ops.a.as_ptr().wrapping_add(row * k + k0),
                            b,
                            bias,
                            c: c.wrapping_add(offset),
                            residual: residual.map(|p| p.wrapping_add(offset)),
                        };
                        let kernel: TileKernel = match (narrow, height) {
                            (false, 6) => tile::<6, 2>,
                            (false, 5) => tile::<5, 2>,
                            (false, 4) => tile::<4, 2>,
                            (false, 3) => tile::<3, 2>,
                            (false, 2) => tile::<2, 2>,
                            (false, _) => tile::<1, 2>,
                            (true, 12) => tile::<12, 1>,
                            (true, 11) => tile::<11, 1>,
                            (true, 10) => tile::<10, 1>,
                            (true, 9) => tile::<9, 1>,
                            (true, 8) => tile::<8, 1>,
                            (true, 7) => tile::<7, 1>,
                            (true, 6) => tile::<6, 1>,
                            (true, 5) => tile::<5, 1>,
                            (true, 4) => tile::<4, 1>,
                            (true, 3) => tile::<3, 1>,
                            (true, 2) => tile::<2, 1>,
                            (true, _) => tile::<1, 1>,
                        };
                        kernel(&tile_args, &ptrs, depth, cols, phase);
                        r += height;
                    }
                }
            }
        }
    }
}

type TileKernel = unsafe fn(&TileArgs, &TilePtrs, usize, usize, Phase);

/// Whether a `k` block is the first (start from the bias) and the last
/// (apply residual and clamp) of the product.
#[derive(Clone, Copy)]
struct Phase {
    first: bool,
    last: bool,
}

struct TileArgs {
    lda: usize,
    ldc: usize,
    lo: __m256,
    hi: __m256,
}

struct TilePtrs {
    a: *const f32,
    b: *const f32,
    bias: *const f32,
    c: *mut f32,
    residual: Option<*const f32>,
}

/// Computes an `R`x`8V` tile over `depth` values of `k`. Only the first
/// `cols` columns of `C` and the residual are touched: a vector's pointer
/// may lie past the row (hence `wrapping_add`), but its masked-off lanes are
/// never accessed.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const V: usize>(
    args: &TileArgs,
    ptrs: &TilePtrs,
    depth: usize,
    cols: usize,
    phase: Phase,
) {
    let masks = column_masks(cols);
    let full = cols >= 8 * V;
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    if phase.first {
        let mut bias = [_mm256_setzero_ps(); V];
        for (v, b) in bias.iter_mut().enumerate() {
            *b = _mm256_loadu_ps(ptrs.bias.wrapping_add(8 * v));
        }
        acc = [bias; R];
    } else {
        for (r, row) in acc.iter_mut().enumerate() {
            let c = ptrs.c.wrapping_add(r * args.ldc);
            for (v, value) in row.iter_mut().enumerate() {
                *value = load(c.wrapping_add(8 * v), masks[v], full);
            }
        }
    }

    // One pointer per row of `A` and `UNROLL` steps of `k` per iteration, so
    // that broadcasts use constant offsets instead of recomputed addresses.
    let mut rows = [ptrs.a; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = ptrs.a.wrapping_add(r * args.lda);
    }
    let mut b = ptrs.b;
    for _ in 0..depth / UNROLL {
        for step in 0..UNROLL {
            multiply_add(&mut acc, &rows, step, b.wrapping_add(step * NR));
        }
        for row in rows.iter_mut() {
            *row = row.wrapping_add(UNROLL);
        }
        b = b.wrapping_add(UNROLL * NR);
    }
    for step in 0..depth % UNROLL {
        multiply_add(&mut acc, &rows, step, b.wrapping_add(step * NR));
    }

    for (r, row) in acc.iter_mut().enumerate() {
        let c = ptrs.c.wrapping_add(r * args.ldc);
        for (v, value) in row.iter_mut().enumerate() {
            if phase.last {
                if let Some(residual) = ptrs.residual {
                    let res = residual.wrapping_add(r * args.ldc + 8 * v);
                    *value = _mm256_add_ps(*value, load(res, masks[v], full));
                }
                *value = _mm256_min_ps(_mm256_max_ps(*value, args.lo), args.hi);
            }
            store(c.wrapping_add(8 * v), *value, masks[v], full);
        }
    }
}

/// Adds the outer product of column `step` of the rows of `A` and one row
/// of a `B` panel to `acc`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn multiply_add<const R: usize, const V: usize>(
    acc: &mut [[__m256; V]; R],
    rows: &[*const f32; R],
    step: usize,
    b: *const f32,
) {
    let mut panel = [_mm256_setzero_ps(); V];
    for (v, p) in panel.iter_mut().enumerate() {
        *p = _mm256_loadu_ps(b.wrapping_add(8 * v));
    }
    for (values, &row) in acc.iter_mut().zip(rows) {
        let x = _mm256_broadcast_ss(&*row.wrapping_add(step));
        for (value, &p) in values.iter_mut().zip(&panel) {
            *value = _mm256_fmadd_ps(x, p, *value);
        }
    }
}

/// Lane masks selecting the first `cols` of `NR` columns, per vector.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn column_masks(cols: usize) -> [__m256i; 2] {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let first = _mm256_set1_epi32(cols.min(8) as i32);
    let second = _mm256_set1_epi32(cols.saturating_sub(8) as i32);
    [
        _mm256_cmpgt_epi32(first, lanes),
        _mm256_cmpgt_epi32(second, lanes),
    ]
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(ptr: *const f32, mask: __m256i, full: bool) -> __m256 {
    if full {
        _mm256_loadu_ps(ptr)
    } else {
        _mm256_maskload_ps(ptr, mask)
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(ptr: *mut f32, value: __m256, mask: __m256i, full: bool) {
    if full {
        _mm256_storeu_ps(ptr, value)
    } else {
        _mm256_maskstore_ps(ptr, mask, value)
    }
}
