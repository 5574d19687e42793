//! Field orders: the fields of the last objects of each kind, in order, so that the scanner
//! recognises the next object's fields by comparing bytes instead of scanning and looking up
//! their names (connectors write every record's fields in the same order).

/// The fields of the last objects of one kind, in order, and what each name resolved to: one
/// list per shape (by first field), so that records of a few shapes taking turns (changes and
/// transaction markers, say) each keep theirs.
#[derive(Debug)]
pub(super) struct FieldOrder<F>(Vec<Shape<F>>);

/// Most shapes an order keeps; another one replaces the last.
const SHAPES: usize = 4;

impl<F> Default for FieldOrder<F> {
    fn default() -> Self {
        FieldOrder(Vec::new())
    }
}

impl<F: Copy> FieldOrder<F> {
    /// The shape of the object whose fields start `rest` (made, or taken over, if none is).
    pub(super) fn shape(&mut self, rest: &[u8]) -> &mut Shape<F> {
        let known = self
            .0
            .iter()
            .position(|shape| shape.recognise(0, rest).is_some());
        let index = match known {
            Some(index) => index,
            None if self.0.len() < SHAPES => {
                self.0.push(Shape(Vec::new()));
                self.0.len() - 1
            }
            None => SHAPES - 1,
        };
        &mut self.0[index]
    }

    /// The most fields any shape remembers.
    #[cfg(test)]
    pub(super) fn longest_shape(&self) -> usize {
        self.0.iter().map(|shape| shape.0.len()).max().unwrap_or(0)
    }
}

/// Most fields of one shape remembered; later ones are read the general way.
pub(super) const FIELDS_LEARNT: usize = 256;

/// One shape's fields, in order.
#[derive(Debug)]
pub(super) struct Shape<F>(Vec<(FieldStart, F)>);

impl<F: Copy> Shape<F> {
    /// What the `index`th field resolved to last time, and its start's length, if `rest`
    /// starts with the same name.
    pub(super) fn recognise(&self, index: usize, rest: &[u8]) -> Option<(F, usize)> {
        let (start, what) = self.0.get(index)?;
        start.begins(rest).then_some((*what, start.bytes.len()))
    }

    /// Remembers the `index`th field (the fields before it are known); only the first
    /// [`FIELDS_LEARNT`], so that an odd huge object does not stay in memory.
    pub(super) fn learn(&mut self, index: usize, name: &str, what: F) {
        if index >= FIELDS_LEARNT {
            return;
        }
        let start = FieldStart::new(name);
        match self.0.get_mut(index) {
            Some(slot) => *slot = (start, what),
            None => self.0.push((start, what)),
        }
    }
}

/// The bytes that start a field, `"name":`, with its first 16 bytes as a masked word: most
/// names are recognised with one comparison instead of a call to `memcmp`.
#[derive(Debug)]
struct FieldStart {
    bytes: Box<[u8]>,
    head: u128,
    mask: u128,
}

impl FieldStart {
    fn new(name: &str) -> Self {
        let bytes: Box<[u8]> = [&b"\""[..], name.as_bytes(), b"\":"].concat().into();
        let mut head = [0; 16];
        let short = bytes.len().min(16);
        head[..short].copy_from_slice(&bytes[..short]);
        let mask = match bytes.len() {
            16.. => u128::MAX,
            len => (1 << (8 * len)) - 1,
        };
        FieldStart {
            head: u128::from_le_bytes(head),
            mask,
            bytes,
        }
    }

    /// Whether `rest` starts with this field.
    fn begins(&self, rest: &[u8]) -> bool {
        match rest.get(..16) {
            Some(chunk) if self.bytes.len() <= 16 => {
                let mut word = [0; 16];
                word.copy_from_slice(chunk);
                (u128::from_le_bytes(word) ^ self.head) & self.mask == 0
            }
            _ => rest.starts_with(&self.bytes),
        }
    }
}
