//! Extracting the uncompressed ELF kernel (`vmlinux`) from a bzImage, as the kernel's
//! own `extract-vmlinux` does — Firecracker boots only the ELF.
//!
//! The setup header says where the compressed payload is (`payload_offset`,
//! `payload_length` at 0x248); its first bytes name the compression. Debian's cloud
//! kernel uses LZ4 in the legacy frame: magic `02 21 4C 18`, then blocks of
//! `u32 little-endian compressed length` + LZ4 block data, each inflating to at most
//! 8 MiB; the payload's last 4 bytes hold the uncompressed size.

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("not a bzImage: {0}")]
    NotBzImage(&'static str),
    #[error("the kernel payload is compressed with {0}, which is not supported (only LZ4 legacy)")]
    Unsupported(&'static str),
    #[error("corrupt LZ4 payload: {0}")]
    Corrupt(String),
    #[error("the payload did not inflate to an ELF kernel")]
    NotElf,
}

/// The compressed payload of a bzImage.
pub fn payload(bzimage: &[u8]) -> Result<&[u8], ExtractError> {
    if bzimage.len() < 0x260 || &bzimage[0x202..0x206] != b"HdrS" {
        return Err(ExtractError::NotBzImage("no HdrS setup header"));
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let read_u32 = |at: usize| {
        u32::from_le_bytes([
            bzimage[at],
            bzimage[at + 1],
            bzimage[at + 2],
            bzimage[at + 3],
        ]) as usize
    };
    let start = (setup_sects + 1) * 512 + read_u32(0x248);
    let end = start
        .checked_add(read_u32(0x24c))
        .ok_or(ExtractError::NotBzImage("payload length overflows"))?;
    bzimage
        .get(start..end)
        .ok_or(ExtractError::NotBzImage("payload lies outside the file"))
}

/// Inflates the bzImage's kernel to its ELF `vmlinux`.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, ExtractError> {
    let payload = payload(bzimage)?;
    let kind = match payload.get(..4) {
        Some(m) if m == LZ4_LEGACY_MAGIC => "lz4",
        Some([0x1f, 0x8b, ..]) => "gzip",
        Some([0xfd, b'7', b'z', b'X']) => "xz",
        Some([0x28, 0xb5, 0x2f, 0xfd]) => "zstd",
        _ => "an unknown format",
    };
    if kind != "lz4" {
        return Err(ExtractError::Unsupported(kind));
    }
    let out = inflate_lz4_legacy(payload)?;
    if out.get(..4) != Some(&ELF_MAGIC[..]) {
        return Err(ExtractError::NotElf);
    }
    Ok(out)
}

/// Inflates an LZ4 legacy stream. The kernel build appends the uncompressed size (4
/// bytes) after the last block; it reads as a block length larger than what is left,
/// which ends the stream.
fn inflate_lz4_legacy(stream: &[u8]) -> Result<Vec<u8>, ExtractError> {
    let mut pos = 4;
    let mut out = Vec::with_capacity(stream.len() * 3);
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while pos + 4 <= stream.len() {
        let len = u32::from_le_bytes([
            stream[pos],
            stream[pos + 1],
            stream[pos + 2],
            stream[pos + 3],
        ]) as usize;
        if stream[pos..pos + 4] == LZ4_LEGACY_MAGIC {
            // A concatenated stream starts over.
            pos += 4;
            continue;
        }
        if len == 0 || pos + 4 + len > stream.len() {
            break;
        }
        let data = &stream[pos + 4..pos + 4 + len];
        let n = lz4_flex::block::decompress_into(data, &mut block)
            .map_err(|e| ExtractError::Corrupt(format!("block at offset {pos}: {e}")))?;
        out.extend_from_slice(&block[..n]);
        pos += 4 + len;
    }
    if out.is_empty() {
        return Err(ExtractError::Corrupt("no block inflated".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake bzImage: setup header pointing at an LZ4 legacy payload.
    fn fake_bzimage(kernel: &[u8]) -> Vec<u8> {
        let mut payload = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in kernel.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
            payload.extend_from_slice(&block);
        }
        payload.extend_from_slice(&(kernel.len() as u32).to_le_bytes());
        let setup_sects = 3u8;
        let mut image = vec![0u8; (setup_sects as usize + 1) * 512];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let offset = 0x40u32;
        image[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend(std::iter::repeat_n(0u8, offset as usize));
        image.extend_from_slice(&payload);
        image.extend_from_slice(b"trailing");
        image
    }

    #[test]
    fn inflates_a_multi_block_lz4_legacy_payload() {
        let mut kernel = ELF_MAGIC.to_vec();
        kernel.extend((0..(LZ4_LEGACY_BLOCK + 12345)).map(|i| (i % 251) as u8));
        let image = fake_bzimage(&kernel);
        assert_eq!(extract_vmlinux(&image).unwrap(), kernel);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(matches!(
            extract_vmlinux(b"not a kernel"),
            Err(ExtractError::NotBzImage(_))
        ));
        let mut image = fake_bzimage(b"\x7fELF tiny");
        let start = payload(&image)
            .map(|p| p.as_ptr() as usize - image.as_ptr() as usize)
            .unwrap();
        image[start..start + 4].copy_from_slice(&[0x1f, 0x8b, 8, 0]);
        assert_eq!(
            extract_vmlinux(&image),
            Err(ExtractError::Unsupported("gzip"))
        );
        let not_elf = fake_bzimage(b"MZ not an elf");
        assert_eq!(extract_vmlinux(&not_elf), Err(ExtractError::NotElf));
    }
}
