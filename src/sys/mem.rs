//! `memcpy` and `memmove` for the static x86-64 (musl) build. musl's x86-64 `memcpy` is
//! `rep movsq` plus a `movsb` loop, whatever the length: about 30 ns for a copy of
//! 1–20 bytes where glibc's takes 3. A request makes about a thousand such copies
//! (`serde_json` and `format!` append every token and literal to a buffer by `memcpy`),
//! about 30 µs of it on this path (BENCHMARKS.md). Here copies of up to 32 bytes are two
//! loads and two stores, longer ones one `rep movsb` (no slower than musl's at any
//! length measured, 33 bytes to 64 KiB, on CPUs with fast short `rep movsb`; BENCHMARKS.md).
//! aarch64's musl `memcpy` is already fast, so nothing here is built for it, nor for
//! glibc builds, whose tests run these as plain functions.
//!
//! No loops and no slice copies here: the compiler would turn either into a call to
//! `memcpy`, which these replace.
#![cfg(all(target_arch = "x86_64", any(target_env = "musl", test)))]

/// Copies `n` bytes from `src` to `dest`; the regions may overlap.
///
/// # Safety
/// `src` must be valid for `n` reads and `dest` for `n` writes.
#[cfg_attr(target_env = "musl", unsafe(no_mangle))]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // `dest` is not inside (src, src + n): a forward copy never reads a byte it wrote.
    if (dest as usize).wrapping_sub(src as usize) >= n || n <= 32 {
        // SAFETY: the caller's promise; copies of up to 32 bytes read everything before
        // they write, and longer ones go forward, which this overlap allows.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: the caller's promise. Backwards, byte by byte from the last (the direction
    // flag set for the copy and cleared after, as the ABI requires): `dest` is above
    // `src`, so no byte is read after it was written.
    unsafe {
        std::arch::asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            inout("rcx") n => _,
            options(nostack),
        );
    }
    dest
}

/// Copies `n` bytes from `src` to `dest`. Copies of up to 32 bytes also allow overlap
/// (`memmove` relies on that), longer ones forward overlap only.
///
/// # Safety
/// `src` must be valid for `n` reads and `dest` for `n` writes.
#[cfg_attr(target_env = "musl", unsafe(no_mangle))]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's promise. Each short case reads the first and the last chunk
    // (overlapping when `n` is not twice the chunk) before it writes either; every
    // access lies within the `n` bytes.
    unsafe {
        match n {
            0 => {}
            1 => dest.write(src.read()),
            2..=3 => ends::<u16>(dest, src, n),
            4..=7 => ends::<u32>(dest, src, n),
            8..=15 => ends::<u64>(dest, src, n),
            16..=32 => ends::<u128>(dest, src, n),
            _ => std::arch::asm!(
                "rep movsb",
                inout("rdi") dest => _,
                inout("rsi") src => _,
                inout("rcx") n => _,
                options(nostack, preserves_flags),
            ),
        }
    }
    dest
}

/// The first and the last `T` of `n` bytes (`size_of::<T>() <= n <= 2 * size_of::<T>()`),
/// both read before either is written.
///
/// # Safety
/// As `memcpy`, with `n` in that range.
#[inline(always)]
unsafe fn ends<T>(dest: *mut u8, src: *const u8, n: usize) {
    let last = n - size_of::<T>();
    // SAFETY: the caller's promise: both chunks lie within the `n` bytes.
    unsafe {
        let a = src.cast::<T>().read_unaligned();
        let b = src.add(last).cast::<T>().read_unaligned();
        dest.cast::<T>().write_unaligned(a);
        dest.add(last).cast::<T>().write_unaligned(b);
    }
}

#[cfg(test)]
mod tests {
    use super::{memcpy, memmove};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn copies_every_length_at_every_alignment() {
        let src = pattern(300);
        for n in 0..260 {
            for offset in 0..9 {
                let mut dest = vec![0xAAu8; 300];
                // SAFETY: both buffers hold `offset + n` bytes and do not overlap.
                let back = unsafe {
                    memcpy(
                        dest.as_mut_ptr().add(offset),
                        src.as_ptr().add(1),
                        std::hint::black_box(n),
                    )
                };
                assert_eq!(back, dest[offset..].as_mut_ptr());
                assert_eq!(
                    &dest[offset..offset + n],
                    &src[1..1 + n],
                    "n={n} offset={offset}"
                );
                assert!(
                    dest[..offset].iter().all(|&b| b == 0xAA),
                    "wrote before: n={n}"
                );
                assert!(
                    dest[offset + n..].iter().all(|&b| b == 0xAA),
                    "wrote after: n={n}"
                );
            }
        }
    }

    #[test]
    fn moves_overlapping_regions_either_way() {
        for n in [0, 1, 2, 3, 5, 8, 13, 16, 31, 32, 33, 64, 100, 257] {
            for shift in -40isize..=40 {
                let mut buf = pattern(400);
                let (from, to) = (100usize, (100 + shift) as usize);
                // Built by indexing, not by a copy these functions may be serving.
                let want: Vec<u8> = (0..buf.len())
                    .map(|i| {
                        if (to..to + n).contains(&i) {
                            buf[i - to + from]
                        } else {
                            buf[i]
                        }
                    })
                    .collect();
                // SAFETY: both ranges lie inside `buf`.
                unsafe {
                    let base = buf.as_mut_ptr();
                    memmove(base.add(to), base.add(from), std::hint::black_box(n));
                }
                assert_eq!(buf, want, "n={n} shift={shift}");
            }
        }
    }
}
