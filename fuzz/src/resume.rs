//! The resume protocol's two codecs (`warpgate::resume`): the note a transfer end sends in the
//! link's selection, and the sender's verdict ahead of its data.
//!
//! Input: any bytes, decoded as a note; and, when there are at least 8 + 13 of them, the first
//! 8 as an offer's length and the next 13 as the verdict on it.

use warpgate::resume::{Note, Offer, Verdict, VERDICT_LEN};

use crate::Sample;

pub fn run(data: &[u8]) -> bool {
    let note = Note::decode(data)
        .inspect(|note| {
            // Strict: what decoded is exactly what the encoder writes, never longer than a
            // selection note may be.
            assert_eq!(note.encode(), data);
            assert!(data.len() <= warpgate::link::MAX_NOTE);
        })
        .is_ok();
    let verdict = match (data.get(..8), data.get(8..8 + VERDICT_LEN)) {
        (Some(len), Some(bytes)) => {
            let offer = Offer {
                len: u64::from_le_bytes(len.try_into().expect("8 bytes")),
                sha256: [0; 32],
            };
            let bytes: &[u8; VERDICT_LEN] = bytes.try_into().expect("a verdict's bytes");
            Verdict::decode(bytes, &offer)
                .inspect(|verdict| {
                    assert_eq!(&verdict.encode(), bytes);
                    // Data resumes at the offered length or starts over: never anywhere else.
                    assert!(verdict.from() == 0 || verdict.from() == offer.len);
                })
                .is_ok()
        }
        _ => false,
    };
    note || verdict
}

pub fn samples() -> Vec<Sample> {
    let offer = Offer {
        len: 1_288_490_188,
        sha256: [0x5a; 32],
    };
    let notes = [
        (
            "note-sends",
            Note {
                sends_file: Some(2 << 30),
                offer: None,
            },
        ),
        (
            "note-offers",
            Note {
                sends_file: None,
                offer: Some(offer),
            },
        ),
        (
            "note-both",
            Note {
                sends_file: Some(4096),
                offer: Some(offer),
            },
        ),
    ];
    let mut samples: Vec<Sample> = notes
        .iter()
        .map(|(name, note)| (name.to_string(), note.encode()))
        .collect();
    for (name, verdict) in [
        ("verdict-resume", Verdict::Resume(offer.len)),
        ("verdict-mismatch", Verdict::Mismatch),
        ("verdict-shorter", Verdict::Shorter),
    ] {
        let mut bytes = offer.len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&verdict.encode());
        samples.push((name.to_string(), bytes));
    }
    samples
}
