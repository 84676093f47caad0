//! Finding a free range of the address space close enough to an object that jumps both ways
//! (and PC-relative data references) reach.

use std::ops::Range;

use crate::maps::MapEntry;

/// Addresses at or above this are the kernel's (`[vsyscall]` is listed in maps up there).
const KERNEL_HALF: u64 = 1 << 63;
/// The kernel keeps at least this much below the main stack for it to grow (`mmap_base` gap).
pub const MIN_STACK_RESERVE: u64 = 128 << 20;
/// `stack_guard_gap`: the kernel refuses mappings this close below a growable stack.
pub const STACK_GUARD_GAP: u64 = 1 << 20;

/// Where in a process's address space a new mapping may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceLimits {
    /// Lowest usable address (`/proc/sys/vm/mmap_min_addr`).
    pub min_addr: u64,
    /// One past the highest usable address.
    pub max_addr: u64,
    /// Page size of the target; regions are aligned to it and separated from other mappings
    /// by at least one such guard page.
    pub page_size: u64,
    /// Space kept free below the main thread's `[stack]` so it can still grow.
    pub stack_reserve: u64,
}

impl SpaceLimits {
    /// Limits for a process whose mappings are `maps`: the top of the user address space is
    /// derived from the highest user mapping (the stack sits just under it), `stack_limit` is
    /// the target's soft `RLIMIT_STACK` (`None` when unlimited or unknown).
    pub fn new(maps: &[MapEntry], page_size: u64, min_addr: u64, stack_limit: Option<u64>) -> Self {
        let stack_reserve = stack_limit
            .unwrap_or(0)
            .clamp(MIN_STACK_RESERVE, u64::MAX / 4)
            .saturating_add(STACK_GUARD_GAP);
        SpaceLimits {
            min_addr,
            max_addr: user_space_end(maps, page_size),
            page_size,
            stack_reserve,
        }
    }
}

/// One past the highest address a user mapping can have: the highest user mapping's end,
/// rounded up to a power of two (the size of the virtual address space: 2^47 on x86_64 with
/// 4-level paging, 2^39..2^52 on aarch64), minus the page the kernel keeps unmapped at the top.
/// Without any mapping, the x86_64 value.
pub fn user_space_end(maps: &[MapEntry], page_size: u64) -> u64 {
    let highest = maps
        .iter()
        .filter(|m| m.start < KERNEL_HALF)
        .map(|m| m.end)
        .max()
        .unwrap_or(1 << 47);
    highest
        .checked_next_power_of_two()
        .unwrap_or(KERNEL_HALF)
        .min(KERNEL_HALF)
        .saturating_sub(page_size)
}

/// A page-aligned address for `size` bytes (rounded up to whole pages) in free address space,
/// with at least one free guard page between the region and any existing mapping, inside
/// `limits`, such that every byte of the region is at most `max_distance` away from every byte
/// of `object`. Among the candidates, the one nearest to `object` wins (the lower on a tie).
/// `None` when nothing fits.
pub fn find_region(
    maps: &[MapEntry],
    object: Range<u64>,
    size: u64,
    max_distance: u64,
    limits: &SpaceLimits,
) -> Option<u64> {
    let page = i128::from(limits.page_size);
    if page <= 0 || !limits.page_size.is_power_of_two() || object.is_empty() || size == 0 {
        return None;
    }
    let size = round_up(i128::from(size), page);
    let (o_start, o_end) = (i128::from(object.start), i128::from(object.end));
    let dist = i128::from(max_distance);
    // Every pair of bytes within reach: the lowest region byte must reach the object's last
    // byte, and the highest region byte the object's first.
    let reach = (o_end - 1 - dist)..=(o_start + dist + 1 - size);

    let mut busy: Vec<(i128, i128)> = maps
        .iter()
        .filter(|m| m.start < KERNEL_HALF && m.end > m.start)
        .map(|m| {
            let start = if m.is_stack() {
                m.start.saturating_sub(limits.stack_reserve)
            } else {
                m.start
            };
            (i128::from(start), i128::from(m.end))
        })
        .collect();
    busy.sort_unstable();

    let floor = round_up(i128::from(limits.min_addr), page);
    let ceiling = i128::from(limits.max_addr);
    let mut best: Option<(i128, i128)> = None; // (distance, address)
    let mut consider = |lo: i128, hi: i128| {
        let first = round_up(lo.max(floor).max(*reach.start()), page);
        let last = round_down((hi.min(ceiling) - size).min(*reach.end()), page);
        if first > last {
            return;
        }
        // Nearest address of [first, last] to the object.
        let (addr, d) = if last + size <= o_start {
            (last, o_start - (last + size))
        } else if first >= o_end {
            (first, first - o_end)
        } else {
            (first, 0)
        };
        if best.is_none_or(|(bd, ba)| (d, addr) < (bd, ba)) {
            best = Some((d, addr));
        }
    };

    let mut prev_end: Option<i128> = None;
    for &(start, end) in &busy {
        let lo = prev_end.map_or(floor, |e| e + page);
        consider(lo, start - page);
        prev_end = Some(prev_end.map_or(end, |e| e.max(end)));
    }
    consider(prev_end.map_or(floor, |e| e + page), ceiling);

    best.and_then(|(_, a)| u64::try_from(a).ok())
}

fn round_up(v: i128, page: i128) -> i128 {
    (v + page - 1).div_euclid(page) * page
}

fn round_down(v: i128, page: i128) -> i128 {
    v.div_euclid(page) * page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{MapName, Perms};

    const PAGE: u64 = 0x1000;

    fn map(start: u64, end: u64) -> MapEntry {
        MapEntry {
            start,
            end,
            perms: Perms::default(),
            offset: 0,
            dev: (0, 0),
            inode: 0,
            name: MapName::Anonymous,
        }
    }

    fn limits(maps: &[MapEntry]) -> SpaceLimits {
        SpaceLimits::new(maps, PAGE, 0x10000, None)
    }

    /// The properties every answer must have.
    fn check(maps: &[MapEntry], object: Range<u64>, size: u64, dist: u64, l: &SpaceLimits) -> u64 {
        let a = find_region(maps, object.clone(), size, dist, l).expect("a region");
        let size = size.div_ceil(PAGE) * PAGE;
        assert_eq!(a % PAGE, 0);
        assert!(a >= l.min_addr && a + size <= l.max_addr);
        for m in maps {
            assert!(
                a + size + PAGE <= m.start || m.end + PAGE <= a,
                "{a:#x}+{size:#x} touches {:#x}-{:#x}",
                m.start,
                m.end
            );
        }
        assert!((a + size - 1).abs_diff(object.start) <= dist);
        assert!((object.end - 1).abs_diff(a) <= dist);
        a
    }

    #[test]
    fn picks_the_nearest_hole_with_guard_pages() {
        // object 0x100000-0x140000, a neighbour right after with a 2-page gap (too small for a
        // 1-page region plus two guards), then a big hole.
        let maps = vec![
            map(0x10000, 0x100000),
            map(0x100000, 0x140000),
            map(0x142000, 0x150000),
            map(0x7ff000000000, 0x7ff000021000),
        ];
        let l = limits(&maps);
        let a = check(&maps, 0x100000..0x140000, 0x800, 1 << 31, &l);
        assert_eq!(a, 0x151000);
        // A 3-page gap fits exactly one page.
        let maps = vec![
            map(0x10000, 0x100000),
            map(0x100000, 0x140000),
            map(0x143000, 0x150000),
        ];
        let l = limits(&maps);
        assert_eq!(
            check(&maps, 0x100000..0x140000, 0x1000, 1 << 31, &l),
            0x141000
        );
    }

    #[test]
    fn below_the_object_when_that_is_nearer() {
        let maps = vec![
            map(0x10000000, 0x10100000),
            map(0x10102000, 0x10200000),
            map(0x40000000, 0x40001000),
        ];
        let l = limits(&maps);
        // Above: 0x10201000 (distance 0x1000 from 0x10200000); below: ends at 0xfffe000
        // before 0x10000000 (distance 0x2000 from the object). Object is the second mapping.
        let a = check(&maps, 0x10102000..0x10200000, 0x2000, 1 << 31, &l);
        assert_eq!(a, 0x10201000);
        // Make above unavailable: a mapping right after the object.
        let maps = vec![
            map(0x10000000, 0x10100000),
            map(0x10102000, 0x10200000),
            map(0x10201000, 0x40000000),
        ];
        let l = limits(&maps);
        let a = check(&maps, 0x10102000..0x10200000, 0x2000, 1 << 31, &l);
        assert_eq!(a, 0x10000000 - 0x1000 - 0x2000);
    }

    #[test]
    fn every_byte_within_reach_both_ways() {
        // Only space is far above: object 0x400000-0x500000, hole starts at 0x600000.
        let maps = vec![
            map(0x10000, 0x400000),
            map(0x400000, 0x500000),
            map(0x500000, 0x5ff000),
        ];
        let l = limits(&maps);
        // 0x600000 + 0x1000 - 1 - 0x400000 = 0x200fff: needs max_distance >= that.
        assert_eq!(
            find_region(&maps, 0x400000..0x500000, 0x1000, 0x200ffe, &l),
            None
        );
        assert_eq!(
            check(&maps, 0x400000..0x500000, 0x1000, 0x200fff, &l),
            0x600000
        );
        // A larger region needs more reach.
        assert_eq!(
            find_region(&maps, 0x400000..0x500000, 0x2000, 0x200fff, &l),
            None
        );
        assert_eq!(
            check(&maps, 0x400000..0x500000, 0x2000, 0x201fff, &l),
            0x600000
        );
    }

    #[test]
    fn no_fit_cases() {
        let maps = vec![map(0x10000, 0x7ffffffff000)];
        let l = limits(&maps);
        assert_eq!(
            find_region(&maps, 0x10000..0x20000, 0x1000, 1 << 31, &l),
            None
        );
        // Hole exists but too far for aarch64's reach.
        let maps = vec![map(0x10000, 0x40000000), map(0x40000000, 0x40100000)];
        let l = limits(&maps);
        assert_eq!(
            find_region(&maps, 0x10000..0x1000000, 0x1000, (128 << 20) - 4096, &l),
            None
        );
        // Degenerate inputs.
        assert_eq!(
            find_region(&maps, 0x1000..0x1000, 0x1000, 1 << 31, &l),
            None
        );
        assert_eq!(find_region(&maps, 0x10000..0x20000, 0, 1 << 31, &l), None);
        let bad = SpaceLimits {
            page_size: 3000,
            ..l
        };
        assert_eq!(find_region(&maps, 0x10000..0x20000, 1, 1 << 31, &bad), None);
    }

    #[test]
    fn respects_min_and_max_addresses() {
        // Object near the bottom: the hole below it is under mmap_min_addr.
        let maps = vec![map(0x11000, 0x100000), map(0x101000, 0x7fff00000000)];
        let l = limits(&maps);
        assert_eq!(
            find_region(&maps, 0x11000..0x100000, 0x1000, 1 << 31, &l),
            None
        );
        let low = SpaceLimits {
            min_addr: 0x1000,
            ..l
        };
        assert_eq!(
            check(&maps, 0x11000..0x100000, 0x1000, 1 << 31, &low),
            0xf000
        );
        // Object at the top of the address space: nothing above max_addr.
        let maps = vec![
            map(0x10000, 0x7fffffe00000),
            map(0x7fffffe00000, 0x7ffffffff000),
        ];
        let l = limits(&maps);
        assert_eq!(l.max_addr, 0x7ffffffff000);
        assert_eq!(
            find_region(&maps, 0x7fffffe00000..0x7ffffffff000, 0x1000, 1 << 31, &l),
            None
        );
    }

    #[test]
    fn aarch64_branch_reach_rules_out_far_holes() {
        use kpatch_arch::{Aarch64, Arch};
        let reach = Aarch64.max_branch_distance();
        // An aarch64 PIE at 0xaaaa_c000_0000, its heap right after, libraries far above (the
        // usual layout): the whole first 256 MiB above the heap is taken.
        let exe = 0xaaaa_c000_0000u64..0xaaaa_c002_0000;
        let maps = vec![
            map(exe.start, exe.end),
            map(exe.end + PAGE, exe.end + (256 << 20)),
            map(0xffff_8000_0000, 0xffff_8100_0000),
            map(0xffff_f000_0000, 0xffff_f002_0000),
        ];
        let l = limits(&maps);
        // Below the executable is free and within b's reach.
        let a = check(&maps, exe.clone(), 0x3000, reach, &l);
        assert!(a < exe.start && exe.start - a <= reach);
        // With everything below taken too, the nearest hole is beyond 128 MiB: none.
        let mut full = maps.clone();
        full.push(map(0x10000, exe.start - PAGE));
        let l = limits(&full);
        assert_eq!(find_region(&full, exe.clone(), 0x3000, reach, &l), None);
        // x86_64's 2 GiB reach finds the hole above the heap.
        assert!(find_region(&full, exe, 0x3000, 1 << 31, &l).is_some());
    }

    #[test]
    fn keeps_room_for_the_stack_and_ignores_vsyscall() {
        let mut stack = map(0x7ffd00000000, 0x7ffd00021000);
        stack.name = MapName::Special("[stack]".into());
        let vsyscall = map(0xffffffffff600000, 0xffffffffff601000);
        let lib = map(0x7ffc00000000, 0x7ffc00100000);
        let maps = vec![map(0x10000, lib.start), lib.clone(), stack, vsyscall];
        let l = limits(&maps);
        assert_eq!(l.max_addr, (1 << 47) - PAGE);
        let a = check(&maps, lib.range(), 0x1000, 1 << 31, &l);
        assert_eq!(a, lib.end + PAGE);
        // The object sits right under the stack reserve: only below it.
        let obj = map(
            0x7ffd00000000 - l.stack_reserve - 0x100000,
            0x7ffd00000000 - l.stack_reserve,
        );
        let maps = vec![
            map(0x10000, obj.start - 0x10000),
            obj.clone(),
            maps[2].clone(),
        ];
        let a = check(&maps, obj.range(), 0x1000, 1 << 31, &l);
        assert_eq!(a, obj.start - 2 * PAGE);
    }

    #[test]
    fn larger_rlimit_means_larger_stack_reserve() {
        let l = SpaceLimits::new(&[], PAGE, 0, Some(1 << 30));
        assert_eq!(l.stack_reserve, (1 << 30) + STACK_GUARD_GAP);
        let l = SpaceLimits::new(&[], PAGE, 0, Some(8 << 20));
        assert_eq!(l.stack_reserve, MIN_STACK_RESERVE + STACK_GUARD_GAP);
    }

    #[test]
    fn exhaustive_small_space_agrees_with_brute_force() {
        // Small synthetic layouts, checked against a brute-force scan of every page.
        let layouts: Vec<Vec<(u64, u64)>> = vec![
            vec![(0x20, 0x30), (0x35, 0x40), (0x48, 0x50)],
            vec![(0x12, 0x14), (0x16, 0x30), (0x31, 0x32), (0x3a, 0x3c)],
            vec![(0x30, 0x38)],
        ];
        for layout in layouts {
            let maps: Vec<_> = layout
                .iter()
                .map(|&(s, e)| map(s * PAGE, e * PAGE))
                .collect();
            let l = SpaceLimits {
                min_addr: 0x10 * PAGE,
                max_addr: 0x60 * PAGE,
                page_size: PAGE,
                stack_reserve: 0,
            };
            for obj in &maps {
                for pages in 1..4u64 {
                    for dist_pages in [2u64, 5, 9, 20, 100] {
                        let dist = dist_pages * PAGE;
                        let size = pages * PAGE;
                        let fits = |a: u64| {
                            a >= l.min_addr
                                && a + size <= l.max_addr
                                && maps
                                    .iter()
                                    .all(|m| a + size + PAGE <= m.start || m.end + PAGE <= a)
                                && (a + size - 1).abs_diff(obj.start) <= dist
                                && (obj.end - 1).abs_diff(a) <= dist
                        };
                        let gap = |a: u64| {
                            if a + size <= obj.start {
                                obj.start - (a + size)
                            } else {
                                a.saturating_sub(obj.end)
                            }
                        };
                        let want = (0..0x60)
                            .map(|p| p * PAGE)
                            .filter(|&a| fits(a))
                            .min_by_key(|&a| (gap(a), a));
                        let got = find_region(&maps, obj.range(), size, dist, &l);
                        assert_eq!(got, want, "obj {obj:?} size {size:#x} dist {dist:#x}");
                    }
                }
            }
        }
    }
}
