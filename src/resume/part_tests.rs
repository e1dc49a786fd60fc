use super::*;
use tokio::io::AsyncWriteExt;

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Writes `chunks` through a fresh part for `target`, as a transfer does, and leaves it.
async fn write_fresh(target: &Path, chunks: &[&[u8]]) {
    let mut writer = Part::open(target).unwrap().start(0).unwrap();
    for chunk in chunks {
        writer.write_all(chunk).await.unwrap();
    }
    writer.flush().await.unwrap();
}

#[tokio::test]
async fn what_was_written_is_offered_with_its_hash_and_resumes_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("f.bin");
    let fresh = Part::open(&target).unwrap();
    assert_eq!(fresh.offer(), None);
    assert_eq!(fresh.needs_rehash(), None);
    assert!(!part_path(&target).exists(), "looking creates nothing");

    let data: Vec<u8> = (0..300_001u32).map(|i| (i * 31) as u8).collect();
    write_fresh(&target, &[&data[..1000], &data[1000..200_003]]).await;
    let part = Part::open(&target).unwrap();
    let offer = part.offer().unwrap();
    assert_eq!(offer.len, 200_003);
    assert_eq!(offer.sha256, sha(&data[..200_003]));

    // Resumed: the rest is appended and the record follows it.
    let mut writer = part.start(offer.len).unwrap();
    writer.write_all(&data[200_003..]).await.unwrap();
    drop(writer);
    assert_eq!(std::fs::read(part_path(&target)).unwrap(), data);
    let offer = Part::open(&target).unwrap().offer().unwrap();
    assert_eq!((offer.len, offer.sha256), (data.len() as u64, sha(&data)));

    complete(&target).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), data);
    assert!(!part_path(&target).exists() && !hash_path(&target).exists());
}

/// `Part::open`, hashed again if its record is not trusted (as the transfer does).
fn opened(target: &Path) -> Part {
    let mut part = Part::open(target).unwrap();
    part.rehash(&std::sync::atomic::AtomicBool::new(false))
        .unwrap();
    part
}

#[tokio::test]
async fn bytes_past_the_record_are_hashed_again_and_starting_over_empties_both() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("f.bin");
    write_fresh(&target, &[b"0123456789"]).await;
    // Killed between a write and its record: the file holds more than the record says.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(part_path(&target))
        .unwrap();
    file.write_all(b"unrecorded").unwrap();
    let mut part = Part::open(&target).unwrap();
    assert_eq!(part.needs_rehash(), Some((Rehash::Changed, 20)));
    assert_eq!(part.offer(), None, "nothing is offered before it is hashed");
    part.rehash(&std::sync::atomic::AtomicBool::new(false))
        .unwrap();
    assert!(part.rehashed());
    assert_eq!(part.offer().unwrap().sha256, sha(b"0123456789unrecorded"));
    drop(part.start(20).unwrap());
    assert_eq!(
        std::fs::read(part_path(&target)).unwrap(),
        b"0123456789unrecorded"
    );
    // Its record is exact again: the next look reads nothing back.
    let part = Part::open(&target).unwrap();
    assert_eq!(part.needs_rehash(), None);
    assert_eq!(part.offer().unwrap().len, 20);

    drop(part.start(0).unwrap());
    assert_eq!(std::fs::read(part_path(&target)).unwrap(), b"");
    let part = Part::open(&target).unwrap();
    assert_eq!((part.offer(), part.needs_rehash()), (None, None));
}

#[tokio::test]
async fn a_part_altered_in_place_or_a_missing_damaged_or_cut_record_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("f.bin");
    let data = [5u8; 1000];
    write_fresh(&target, &[&data]).await;
    let record = std::fs::read(hash_path(&target)).unwrap();
    assert_eq!(record.len(), RECORD);
    assert_eq!(Part::open(&target).unwrap().needs_rehash(), None);

    let judged = |record_now: Option<&[u8]>| {
        match record_now {
            Some(bytes) => std::fs::write(hash_path(&target), bytes).unwrap(),
            None => std::fs::remove_file(hash_path(&target)).unwrap(),
        }
        let mut part = Part::open(&target).unwrap();
        assert_eq!(part.offer(), None);
        let why = part.needs_rehash();
        part.rehash(&std::sync::atomic::AtomicBool::new(false))
            .unwrap();
        (why, part.offer())
    };
    let whole = Some(Offer {
        len: 1000,
        sha256: sha(&data),
    });
    assert_eq!(judged(None), (Some((Rehash::NoRecord, 1000)), whole));
    assert_eq!(
        judged(Some(&record[..RECORD - 1])),
        (Some((Rehash::BadRecord, 1000)), whole)
    );
    assert_eq!(
        judged(Some(&[&record[..], b"x"].concat())),
        (Some((Rehash::BadRecord, 1000)), whole)
    );
    let mut flipped = record.clone();
    flipped[40] ^= 1;
    assert_eq!(
        judged(Some(&flipped)),
        (Some((Rehash::BadRecord, 1000)), whole)
    );

    // A byte flipped in place under the intact record: the offer is of what is on disk.
    std::fs::write(hash_path(&target), &record).unwrap();
    let mut altered = data;
    altered[500] ^= 1;
    // A second apart at most: the change time moves even within the write's clock tick.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(part_path(&target), altered).unwrap();
    let altered_offer = Some(Offer {
        len: 1000,
        sha256: sha(&altered),
    });
    assert_eq!(
        judged(Some(&record)),
        (Some((Rehash::Changed, 1000)), altered_offer)
    );
    // Cut below what the record claims.
    std::fs::OpenOptions::new()
        .write(true)
        .open(part_path(&target))
        .unwrap()
        .set_len(999)
        .unwrap();
    let cut = Some(Offer {
        len: 999,
        sha256: sha(&altered[..999]),
    });
    assert_eq!(judged(Some(&record)), (Some((Rehash::Changed, 999)), cut));
    // Starting over from any of these is clean.
    drop(opened(&target).start(0).unwrap());
    let part = Part::open(&target).unwrap();
    assert_eq!((part.offer(), part.needs_rehash()), (None, None));
}

#[test]
fn a_planted_symlink_is_neither_followed_nor_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("precious");
    std::fs::write(&victim, b"keep me").unwrap();
    let target = dir.path().join("received.bin");
    for planted in [part_path(&target), hash_path(&target)] {
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let refused = Part::open(&target).err().unwrap().to_string();
        assert!(
            refused.contains(&planted.display().to_string()) && refused.contains("symbolic link"),
            "{refused}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        std::fs::remove_file(&planted).unwrap();
    }
    // A link that appears after the look is not gone through either.
    let part = Part::open(&target).unwrap();
    std::os::unix::fs::symlink(&victim, part_path(&target)).unwrap();
    let refused = part.start(0).err().unwrap().to_string();
    assert!(refused.contains("already exists"), "{refused}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    // Nor a dangling one.
    std::fs::remove_file(&victim).unwrap();
    assert!(Part::open(&target).is_err());
    assert!(!victim.exists());
}

#[test]
fn a_fifo_or_a_hard_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("received.bin");
    let part = part_path(&target);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &part,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let refused = Part::open(&target).err().unwrap().to_string();
    assert!(refused.contains("not a regular file"), "{refused}");
    std::fs::remove_file(&part).unwrap();

    let other = dir.path().join("other");
    std::fs::write(&other, b"elsewhere").unwrap();
    std::fs::hard_link(&other, &part).unwrap();
    let refused = Part::open(&target).err().unwrap().to_string();
    assert!(refused.contains("hard links"), "{refused}");
    assert_eq!(std::fs::read(&other).unwrap(), b"elsewhere");
}

#[tokio::test]
async fn a_writer_killed_mid_way_leaves_an_exact_record_that_is_taken_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("f.bin");
    let data: Vec<u8> = (0..(7 << 19) + 1234u32)
        .map(|i| (i ^ (i >> 9)) as u8)
        .collect();
    let mut writer = Part::open(&target).unwrap().start(0).unwrap();
    for chunk in data.chunks(100_000) {
        writer.write_all(chunk).await.unwrap();
    }
    // As SIGKILL leaves it: no flush, no drop.
    std::mem::forget(writer);
    let part = Part::open(&target).unwrap();
    assert_eq!(part.needs_rehash(), None, "the record matches the file");
    let offer = part.offer().unwrap();
    assert_eq!((offer.len, offer.sha256), (data.len() as u64, sha(&data)));
    assert!(!part.rehashed());
}
