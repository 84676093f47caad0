//! Writing many small patches of code with few system calls: the writes are grouped into runs
//! of consecutive pages that each contain at least one of them (so no page without a change is
//! copied-on-write), each run is read while the target still runs and written back in one
//! `/proc/PID/mem` write while it is stopped.

use std::collections::BTreeMap;

use kpatch_process::Memory;

use crate::error::{Error, Result};

/// A run of whole pages with its bytes before and after the writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub addr: u64,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

/// Groups `writes` (address, bytes) into page runs, reading their current contents from `mem`.
/// Later writes to the same bytes win.
pub fn plan(mem: &dyn Memory, writes: &[(u64, Vec<u8>)], page: u64) -> Result<Vec<Run>> {
    let mut pages: BTreeMap<u64, ()> = BTreeMap::new();
    for (addr, bytes) in writes {
        if bytes.is_empty() {
            continue;
        }
        let end = addr + bytes.len() as u64;
        let mut p = addr & !(page - 1);
        while p < end {
            pages.insert(p, ());
            p += page;
        }
    }
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &p in pages.keys() {
        match spans.last_mut() {
            Some((_, end)) if *end == p => *end += page,
            _ => spans.push((p, p + page)),
        }
    }
    let mut runs = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        let mut old = vec![0u8; (end - start) as usize];
        mem.read(start, &mut old)?;
        let mut new = old.clone();
        for (addr, bytes) in writes {
            let a = *addr;
            if a >= start && a + bytes.len() as u64 <= end {
                let off = (a - start) as usize;
                new[off..off + bytes.len()].copy_from_slice(bytes);
            }
        }
        runs.push(Run {
            addr: start,
            old,
            new,
        });
    }
    Ok(runs)
}

/// Checks that nothing changed the runs since they were read, then writes them; on a failure
/// puts back the runs already written.
pub fn commit(mem: &dyn Memory, runs: &[Run], after_first: &dyn Fn()) -> Result<()> {
    for r in runs {
        let mut now = vec![0u8; r.old.len()];
        mem.read(r.addr, &mut now)?;
        if now != r.old {
            return Err(Error::CodeChanged { addr: r.addr });
        }
    }
    for (i, r) in runs.iter().enumerate() {
        if let Err(e) = mem.write(r.addr, &r.new) {
            for done in &runs[..i] {
                let _ = mem.write(done.addr, &done.old);
            }
            return Err(e.into());
        }
        if i == 0 {
            after_first();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Fake {
        base: u64,
        bytes: RefCell<Vec<u8>>,
        writes: RefCell<usize>,
    }

    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> kpatch_process::Result<()> {
            let off = (addr - self.base) as usize;
            buf.copy_from_slice(&self.bytes.borrow()[off..off + buf.len()]);
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> kpatch_process::Result<()> {
            let off = (addr - self.base) as usize;
            self.bytes.borrow_mut()[off..off + data.len()].copy_from_slice(data);
            *self.writes.borrow_mut() += 1;
            Ok(())
        }
    }

    #[test]
    fn writes_are_grouped_by_touched_pages() {
        let mem = Fake {
            base: 0x1000,
            bytes: RefCell::new(vec![0x90; 0x5000]),
            writes: RefCell::new(0),
        };
        let writes = vec![
            (0x1010, vec![1, 2, 3, 4, 5]),
            (0x1ffe, vec![6, 7, 8, 9, 10]), // straddles into the second page
            (0x4000, vec![11; 5]),          // a separate run after an untouched page
        ];
        let runs = plan(&mem, &writes, 0x1000).unwrap();
        assert_eq!(
            runs.iter()
                .map(|r| (r.addr, r.new.len()))
                .collect::<Vec<_>>(),
            vec![(0x1000, 0x2000), (0x4000, 0x1000)]
        );
        commit(&mem, &runs, &|| {}).unwrap();
        assert_eq!(*mem.writes.borrow(), 2);
        let b = mem.bytes.borrow();
        assert_eq!(&b[0x10..0x15], &[1, 2, 3, 4, 5]);
        assert_eq!(&b[0xffe..0x1003], &[6, 7, 8, 9, 10]);
        assert_eq!(&b[0x3000..0x3005], &[11; 5]);
        assert_eq!(b[0x2000], 0x90);
    }

    #[test]
    fn a_change_after_planning_is_refused_untouched() {
        let mem = Fake {
            base: 0x1000,
            bytes: RefCell::new(vec![0; 0x1000]),
            writes: RefCell::new(0),
        };
        let runs = plan(&mem, &[(0x1000, vec![1])], 0x1000).unwrap();
        mem.bytes.borrow_mut()[5] = 9;
        assert!(commit(&mem, &runs, &|| {}).is_err());
        assert_eq!(*mem.writes.borrow(), 0);
    }
}
