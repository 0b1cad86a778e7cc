//! Block 4: borrowed fields and the `16R`/`16S` sequence tree.
//!
//! The tree is flat: fields in input order (including the `16R`/`16S` markers, so writing is a
//! walk over one slice) and sequences in order of their `16R`, each knowing its parent and the
//! field range it spans. Two allocations per message, whatever its shape.

/// Index of the root pseudo-sequence (the fields outside any `16R`).
pub const ROOT: u32 = 0;
/// Marker for "no index".
pub(crate) const NONE: u32 = u32::MAX;

/// One `:NNa:` field. `value` is everything after the second colon up to the next tag, with the
/// continuation lines and their original line endings kept verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Tag number and option letter, e.g. `98A`.
    pub tag: &'a str,
    /// Raw value, possibly several lines.
    pub value: &'a str,
    /// Byte offset of the leading `:` in the input.
    pub offset: usize,
    /// Index of the sequence the field belongs to (for `16R`/`16S`: the sequence they open or
    /// close).
    pub sequence: u32,
}

/// A generic field split into its parts: `:QUAL/SCHEME/value` or `:QUAL//value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generic<'a> {
    /// 4!c qualifier, e.g. `SETT`.
    pub qualifier: &'a str,
    /// Data source scheme, when present.
    pub scheme: Option<&'a str>,
    /// The rest of the value.
    pub value: &'a str,
    /// Written with one slash (`:25D::SETT/PEND`), a lenient CCASS form.
    pub one_slash: bool,
}

impl<'a> Field<'a> {
    /// Tag number without option, e.g. `98`.
    pub fn number(&self) -> &'a str {
        self.tag.get(..2).unwrap_or(self.tag)
    }

    /// Option letter, e.g. `A` (empty when the tag has none).
    pub fn option(&self) -> &'a str {
        self.tag.get(2..).unwrap_or("")
    }

    /// Whether the field is a `16R` or `16S` marker.
    pub fn is_marker(&self) -> bool {
        // Byte compares: this runs for every field of every sequence walk.
        matches!(self.tag.as_bytes(), [b'1', b'6', b'R' | b'S'])
    }

    /// The tag as a 3-byte key (`[0; 3]` when it is not 3 bytes), for cheap matching.
    pub(crate) fn tag_key(&self) -> [u8; 3] {
        self.tag.as_bytes().try_into().unwrap_or([0; 3])
    }

    /// The value as a generic field, if it has that shape.
    pub fn generic(&self) -> Option<Generic<'a>> {
        parse_generic(self.value)
    }

    /// The qualifier of a generic field.
    pub fn qualifier(&self) -> Option<&'a str> {
        // Same rule as `generic()` for the qualifier, without splitting the rest.
        let bytes = self.value.as_bytes();
        let generic = bytes.len() >= 6
            && bytes[0] == b':'
            && bytes[5] == b'/'
            && bytes[1..5].iter().all(u8::is_ascii_alphanumeric);
        if generic { self.value.get(1..5) } else { None }
    }

    /// The value's lines without their line endings.
    pub fn lines(&self) -> impl Iterator<Item = &'a str> {
        self.value
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
    }
}

pub(crate) fn parse_generic(value: &str) -> Option<Generic<'_>> {
    let rest = value.strip_prefix(':')?;
    let qualifier = rest.get(..4)?;
    if !qualifier.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return None;
    }
    let rest = rest.get(4..)?.strip_prefix('/')?;
    if let Some(value) = rest.strip_prefix('/') {
        return Some(Generic {
            qualifier,
            scheme: None,
            value,
            one_slash: false,
        });
    }
    let end_of_scheme = rest.bytes().position(|byte| byte == b'/' || byte == b'\n');
    match end_of_scheme {
        Some(index) if rest.as_bytes()[index] == b'/' => Some(Generic {
            qualifier,
            scheme: Some(&rest[..index]),
            value: &rest[index + 1..],
            one_slash: false,
        }),
        _ => Some(Generic {
            qualifier,
            scheme: None,
            value: rest,
            one_slash: true,
        }),
    }
}

/// A `16R`/`16S` sequence (or the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceNode<'a> {
    /// Block name, e.g. `SETPRTY` (empty for the root).
    pub name: &'a str,
    /// Parent index (`u32::MAX` for the root).
    pub parent: u32,
    /// Index of the opening `16R` field (0 for the root).
    pub open: u32,
    /// Index of the closing `16S` field, or the field count when never closed.
    pub close: u32,
    /// Nesting depth (root 0).
    pub depth: u32,
}

/// Block 4 of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text<'a> {
    pub(crate) fields: Vec<Field<'a>>,
    pub(crate) sequences: Vec<SequenceNode<'a>>,
    /// Byte offset of the first field line (after `{4:` and its line break).
    pub(crate) offset: usize,
    /// Byte length of block 4 content, from the first field to the `-}` line.
    pub(crate) length_bytes: usize,
}

impl<'a> Text<'a> {
    /// All fields in input order, `16R`/`16S` included.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }

    /// All sequences in order of their `16R`; index 0 is the root.
    pub fn sequence_nodes(&self) -> &[SequenceNode<'a>] {
        &self.sequences
    }

    /// The root: fields outside any sequence and the top-level sequences.
    pub fn root(&self) -> Seq<'_, 'a> {
        Seq {
            text: self,
            index: ROOT,
        }
    }

    /// Byte offset of block 4 content in the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Length of block 4 content in bytes (characters: the X set is ASCII).
    pub fn length_bytes(&self) -> usize {
        self.length_bytes
    }

    /// The sequence at `index`.
    pub fn seq(&self, index: u32) -> Seq<'_, 'a> {
        Seq { text: self, index }
    }

    /// Path of a sequence: `SETDET/SETPRTY[2]` (the index counts same-named siblings, 1-based,
    /// and is shown when the sequence repeats).
    pub fn sequence_path(&self, index: u32) -> String {
        let mut names = Vec::new();
        let mut current = index;
        while current != ROOT && current != NONE {
            let Some(node) = self.sequences.get(current as usize) else {
                break;
            };
            // Same-named siblings lie between the parent and the parent's close: count those
            // before this one, and look for one after it.
            let parent = node.parent as usize;
            let parent_close = self
                .sequences
                .get(parent)
                .map_or(u32::MAX, |parent_node| parent_node.close);
            let is_sibling = |other: &SequenceNode<'_>| {
                other.parent == node.parent && same(other.name, node.name)
            };
            let before = self.sequences
                [parent.saturating_add(1).min(current as usize)..current as usize]
                .iter()
                .filter(|other| is_sibling(other))
                .count();
            let after = self.sequences[current as usize + 1..]
                .iter()
                .take_while(|other| other.open < parent_close)
                .any(is_sibling);
            if before > 0 || after {
                names.push(format!("{}[{}]", node.name, before + 1));
            } else {
                names.push(node.name.to_owned());
            }
            current = node.parent;
        }
        names.reverse();
        names.join("/")
    }

    /// Path of a field: `SETDET/SETPRTY[2]/95P::DEAG`.
    pub fn field_path(&self, field: &Field<'_>) -> String {
        let sequence = if field.is_marker() {
            self.sequences
                .get(field.sequence as usize)
                .map_or(ROOT, |node| node.parent)
        } else {
            field.sequence
        };
        let mut path = self.sequence_path(sequence);
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(field.tag);
        if let Some(qualifier) = field.qualifier() {
            path.push_str("::");
            path.push_str(qualifier);
        }
        path
    }
}

/// A handle on one sequence of a [`Text`].
#[derive(Debug, Clone, Copy)]
pub struct Seq<'t, 'a> {
    text: &'t Text<'a>,
    index: u32,
}

impl<'t, 'a> Seq<'t, 'a> {
    /// Index into [`Text::sequence_nodes`].
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The node.
    pub fn node(&self) -> SequenceNode<'a> {
        // A text that was never tokenised (the envelope failed first) has no root node.
        self.text
            .sequences
            .get(self.index as usize)
            .copied()
            .unwrap_or(SequenceNode {
                name: "",
                parent: NONE,
                open: 0,
                close: 0,
                depth: 0,
            })
    }

    /// Block name (empty for the root).
    pub fn name(&self) -> &'a str {
        self.node().name
    }

    fn field_range(&self) -> std::ops::Range<usize> {
        let node = self.node();
        let start = if self.index == ROOT {
            0
        } else {
            node.open as usize + 1
        };
        let end = (node.close as usize).min(self.text.fields.len());
        start..end.max(start)
    }

    /// Fields directly in this sequence, without markers and without nested sequences' fields.
    pub fn fields(&self) -> impl Iterator<Item = &'t Field<'a>> + 't {
        let index = self.index;
        self.text.fields[self.field_range()]
            .iter()
            .filter(move |field| field.sequence == index && !field.is_marker())
    }

    /// Direct child sequences in order.
    pub fn children(&self) -> impl Iterator<Item = Seq<'t, 'a>> + 't {
        let index = self.index;
        let text = self.text;
        let close = self.node().close;
        text.sequences
            .iter()
            .enumerate()
            .skip(index as usize + 1)
            .take_while(move |(_, node)| node.open < close)
            .filter(move |(_, node)| node.parent == index)
            .map(move |(child, _)| Seq {
                text,
                index: child as u32,
            })
    }

    /// Direct child sequences named `name`.
    pub fn sequences(&self, name: &'t str) -> impl Iterator<Item = Seq<'t, 'a>> + 't {
        self.children()
            .filter(move |child| same(child.name(), name))
    }

    /// First direct child sequence named `name`.
    pub fn sequence(&self, name: &str) -> Option<Seq<'t, 'a>> {
        self.children().find(|child| same(child.name(), name))
    }

    /// First direct field with tag number `number` (any option) and generic qualifier
    /// `qualifier`.
    pub fn field(&self, number: &str, qualifier: &str) -> Option<&'t Field<'a>> {
        self.fields().find(|field| {
            same(field.number(), number)
                && field
                    .qualifier()
                    .is_some_and(|found| same(found, qualifier))
        })
    }

    /// First direct field with tag number `number` (any option), generic or not.
    pub fn field_by_number(&self, number: &str) -> Option<&'t Field<'a>> {
        self.fields().find(|field| same(field.number(), number))
    }

    /// All fields of the whole text (to resolve [`SequenceNode::open`] and `close`).
    pub fn text_fields(&self) -> &'t [Field<'a>] {
        &self.text.fields
    }

    /// Path of this sequence.
    pub fn path(&self) -> String {
        self.text.sequence_path(self.index)
    }
}

/// String equality for the short codes of ISO 15022 (tags, qualifiers, block names) without a
/// `memcmp` call: a length check and a byte loop the compiler keeps inline.
pub(crate) fn same(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    if left.len() != right.len() {
        return false;
    }
    if let (Some(left4), Some(right4)) = (left.first_chunk::<4>(), right.first_chunk::<4>())
        && left.len() == 4
    {
        return left4 == right4;
    }
    let mut index = 0;
    while index < left.len() {
        if left[index] != right[index] {
            return false;
        }
        index += 1;
    }
    true
}
