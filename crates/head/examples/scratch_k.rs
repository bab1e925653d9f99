use head::kernels::{tile_product, Rows, Scalars};
use std::time::Instant;
fn best(mut f: impl FnMut()) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..20 {
            f();
        }
        b = b.min(t.elapsed().as_secs_f64() * 1e3 / 20.0);
    }
    b
}
fn main() {
    let (b, d, h) = (16usize, 8192usize, 256usize);
    let x: Vec<f32> = (0..b * d).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..d * h).map(|i| (i % 5) as f32 * 0.01).collect();
    let dh: Vec<f32> = (0..b * h).map(|i| (i % 3) as f32 * 0.1).collect();
    let mut out = vec![0f32; b * h];
    let f = best(|| {
        for k in 0..16 {
            tile_product(
                Scalars {
                    data: &x[k * 512..],
                    rs: d,
                    ps: 1,
                },
                Rows {
                    data: &w[k * 512 * h..],
                    ld: h,
                },
                b,
                h,
                512,
                &mut out,
                h,
            );
        }
    });
    let mut g = vec![0f32; 32 * h];
    let gr = best(|| {
        for r in (0..d).step_by(32) {
            tile_product(
                Scalars {
                    data: &x[r..],
                    rs: 1,
                    ps: d,
                },
                Rows { data: &dh, ld: h },
                32,
                h,
                b,
                &mut g,
                h,
            );
        }
    });
    println!("fwd {f:.3} ms  grad {gr:.3} ms (1 thread, min of 15)");
    std::hint::black_box((&out, &g));
}
