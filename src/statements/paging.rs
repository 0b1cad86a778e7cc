//! Packing statement entries into pages (`28E`), pure.
//!
//! A page's size is a fixed part (envelope, `GENL`, wrappers) plus the sizes of its entries
//! ([`crate::iso15022::build::statement_entry_chars`]), so pages are packed greedily before
//! they are built: each page takes entries in order while it stays within both the character
//! and the entry limit. Every entry lands on exactly one page, in order.

use std::ops::Range;

use crate::iso15022::fields::{Continuation, Page};

/// Why entries cannot be paged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    /// One entry alone is longer than a page may be.
    #[error("statement entry {index} needs {needed} characters; a page holds at most {chars_max}")]
    EntryTooLong {
        index: usize,
        needed: usize,
        chars_max: usize,
    },
    /// More pages than `28E`'s five digits (or the reference) can number.
    #[error("statement needs {pages} pages; at most {pages_max}")]
    TooManyPages { pages: usize, pages_max: usize },
}

/// Limits of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Whole message, envelope included.
    pub chars_max: usize,
    /// Entries (holdings or transactions) on one page.
    pub entries_max: usize,
    /// Pages of one statement.
    pub pages_max: usize,
}

/// Splits entries of `sizes` into consecutive ranges, one per page. No entries: one empty
/// page (a statement without activity still has its page).
pub fn pack(
    sizes: &[usize],
    fixed_chars: usize,
    limits: PageLimits,
) -> Result<Vec<Range<usize>>, PagingError> {
    let mut pages = Vec::new();
    let mut start = 0;
    let mut used = fixed_chars;
    for (index, size) in sizes.iter().copied().enumerate() {
        if fixed_chars + size > limits.chars_max {
            return Err(PagingError::EntryTooLong {
                index,
                needed: fixed_chars + size,
                chars_max: limits.chars_max,
            });
        }
        let full = index - start >= limits.entries_max.max(1) || used + size > limits.chars_max;
        if full && index > start {
            pages.push(start..index);
            start = index;
            used = fixed_chars;
        }
        used += size;
    }
    pages.push(start..sizes.len());
    if pages.len() > limits.pages_max {
        return Err(PagingError::TooManyPages {
            pages: pages.len(),
            pages_max: limits.pages_max,
        });
    }
    Ok(pages)
}

/// `28E` of page `index` (0-based) of `count`.
pub fn page(index: usize, count: usize) -> Page {
    let continuation = if count <= 1 {
        Continuation::Only
    } else if index + 1 < count {
        Continuation::More
    } else {
        Continuation::Last
    };
    Page {
        number: u32::try_from(index + 1).unwrap_or(u32::MAX),
        continuation,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: PageLimits = PageLimits {
        chars_max: 100,
        entries_max: 3,
        pages_max: 99_999,
    };

    #[test]
    fn packs_by_characters_and_by_entries() {
        // 20 fixed + 30 + 30 = 80; a third 30 would make 110 > 100.
        assert_eq!(
            pack(&[30, 30, 30, 30], 20, LIMITS).unwrap(),
            vec![0..2, 2..4]
        );
        // Small entries: three per page at most.
        assert_eq!(
            pack(&[1, 1, 1, 1, 1, 1, 1], 20, LIMITS).unwrap(),
            vec![0..3, 3..6, 6..7]
        );
        assert_eq!(pack(&[], 20, LIMITS).unwrap(), vec![0..0]);
    }

    #[test]
    fn refuses_an_entry_longer_than_a_page_and_too_many_pages() {
        assert_eq!(
            pack(&[10, 81], 20, LIMITS),
            Err(PagingError::EntryTooLong {
                index: 1,
                needed: 101,
                chars_max: 100
            })
        );
        let limits = PageLimits {
            pages_max: 2,
            ..LIMITS
        };
        assert_eq!(
            pack(&[1; 7], 20, limits),
            Err(PagingError::TooManyPages {
                pages: 3,
                pages_max: 2
            })
        );
    }

    #[test]
    fn continuation_codes() {
        assert_eq!(page(0, 1).continuation, Continuation::Only);
        assert_eq!(page(0, 3).continuation, Continuation::More);
        assert_eq!(page(1, 3).continuation, Continuation::More);
        assert_eq!(page(2, 3).continuation, Continuation::Last);
        assert_eq!(page(2, 3).number, 3);
    }

    proptest! {
        /// Pages cover every entry once, in order, and each respects both limits.
        #[test]
        fn pages_rejoin_losslessly(
            sizes in proptest::collection::vec(1usize..60, 0..200),
            fixed in 0usize..40,
            entries_max in 1usize..10,
        ) {
            let limits = PageLimits { chars_max: 100, entries_max, pages_max: 100_000 };
            let pages = pack(&sizes, fixed, limits).unwrap();
            let mut next = 0;
            for range in &pages {
                prop_assert_eq!(range.start, next);
                prop_assert!(range.end > range.start || sizes.is_empty());
                prop_assert!(range.len() <= entries_max);
                let chars: usize = fixed + sizes[range.clone()].iter().sum::<usize>();
                prop_assert!(chars <= limits.chars_max);
                next = range.end;
            }
            prop_assert_eq!(next, sizes.len());
            // Greedy: no page could have taken the next page's first entry.
            for pair in pages.windows(2) {
                let chars: usize = fixed + sizes[pair[0].clone()].iter().sum::<usize>();
                prop_assert!(
                    pair[0].len() == entries_max || chars + sizes[pair[1].start] > limits.chars_max
                );
            }
        }
    }
}
