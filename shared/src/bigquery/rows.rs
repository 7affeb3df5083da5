//! A batch of encoded rows in one buffer, each row already framed as one `serialized_rows`
//! entry of Storage Write's `ProtoRows` (key, length, bytes): the buffer *is* the body of the
//! request's `ProtoRows` message. A batch costs one allocation, not one per row, and the
//! writer sends it without walking or copying its rows again.

/// `ProtoRows.serialized_rows`: field 1, length-delimited.
const SERIALIZED_ROWS_KEY: u8 = 1 << 3 | 2;

/// Encoded rows, in order, framed for `ProtoRows`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Rows {
    body: Vec<u8>,
    count: usize,
    /// The rows' own bytes, without framing.
    row_bytes: usize,
}

impl Rows {
    pub fn new() -> Rows {
        Rows::default()
    }

    /// Room for `bytes` of framed rows.
    pub fn with_capacity(bytes: usize) -> Rows {
        Rows {
            body: Vec::with_capacity(bytes),
            count: 0,
            row_bytes: 0,
        }
    }

    /// Appends one encoded row.
    #[inline]
    pub fn push(&mut self, row: &[u8]) {
        push_framed(row, &mut self.body);
        self.count += 1;
        self.row_bytes += row.len();
    }

    /// Appends rows already framed by [`push_framed`]: `count` of them, holding `row_bytes`
    /// bytes of their own. One copy for the lot, however many they are.
    pub fn extend_framed(&mut self, framed: &[u8], count: usize, row_bytes: usize) {
        self.body.extend_from_slice(framed);
        self.count += count;
        self.row_bytes += row_bytes;
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The rows' bytes, without framing.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The encoded `ProtoRows` message (its body: the framed rows).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The rows, each as encoded (without its framing).
    pub fn iter(&self) -> RowsIter<'_> {
        RowsIter { rest: &self.body }
    }
}

/// Appends `row` to `out` framed as one `serialized_rows` entry, as [`Rows`] holds it.
#[inline]
pub fn push_framed(row: &[u8], out: &mut Vec<u8>) {
    out.push(SERIALIZED_ROWS_KEY);
    super::encode::put_varint(row.len() as u64, out);
    out.extend_from_slice(row);
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<R: AsRef<[u8]>> FromIterator<R> for Rows {
    fn from_iter<I: IntoIterator<Item = R>>(rows: I) -> Rows {
        let mut out = Rows::new();
        for row in rows {
            out.push(row.as_ref());
        }
        out
    }
}

/// The rows of a [`Rows`], in order.
pub struct RowsIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RowsIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&key, mut rest) = self.rest.split_first()?;
        debug_assert_eq!(key, SERIALIZED_ROWS_KEY);
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let (&b, after) = rest.split_first().expect("framed by push");
            rest = after;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        let (row, after) = rest.split_at(len);
        self.rest = after;
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gcp_bigquery_client::google::cloud::bigquery::storage::v1::ProtoRows;
    use prost::Message;

    #[test]
    fn the_body_is_prosts_encoding_of_the_same_rows() {
        let rows: Vec<Vec<u8>> = vec![
            vec![],
            vec![1, 2, 3],
            vec![7; 127],
            vec![9; 128],
            vec![5; 20_000],
        ];
        let ours: Rows = rows.iter().collect();
        let theirs = ProtoRows {
            serialized_rows: rows.clone(),
        }
        .encode_to_vec();
        assert_eq!(ours.body(), theirs.as_slice());
        assert_eq!(ours.len(), rows.len());
        assert_eq!(ours.row_bytes(), rows.iter().map(Vec::len).sum::<usize>());
        assert_eq!(ours.iter().collect::<Vec<_>>(), rows);
        assert!(Rows::new().is_empty());
        // One row pushed, the others framed elsewhere and added in one piece: the same rows.
        let mut framed = Vec::new();
        rows[1..]
            .iter()
            .for_each(|row| push_framed(row, &mut framed));
        let mut pieced = Rows::new();
        pieced.push(&rows[0]);
        pieced.extend_framed(&framed, 4, rows[1..].iter().map(Vec::len).sum());
        assert_eq!(pieced, ours);
        assert_eq!(Rows::new().iter().count(), 0);
    }
}
