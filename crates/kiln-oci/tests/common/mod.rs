//! Helpers shared by the integration tests: a tiny hand-made layer, images in memory, and
//! tar surgery for crafting hostile archives.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

use kiln_oci::{
    media_types, sha256_digest, to_canonical_json, Descriptor, History, ImageConfig, ImageName,
    ImageRef, Manifest, MemoryBlobs, RootFs,
};

pub const HELLO: &[u8] = b"hello from kiln\n";

/// An uncompressed layer tar: `etc/` and `etc/hello.txt`.
pub fn layer_tar(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    h.set_path("etc/").unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(content.len() as u64);
    h.set_mtime(0);
    h.set_path("etc/hello.txt").unwrap();
    h.set_cksum();
    b.append(&h, content).unwrap();
    b.into_inner().unwrap()
}

/// gzip with stored (uncompressed) deflate blocks: valid gzip, no compression library needed.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65535).collect()
    };
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i == last));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub struct TestImage {
    pub blobs: MemoryBlobs,
    pub image: ImageRef,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub config: ImageConfig,
    pub config_bytes: Vec<u8>,
    /// (uncompressed tar, gzip blob) per layer.
    pub layers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An OCI image with one gzip layer per entry of `contents`, named `names`.
pub fn image_with(contents: &[&[u8]], names: &[&str]) -> TestImage {
    let mut blobs = MemoryBlobs::new();
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    let mut config = ImageConfig::new("linux", "amd64");
    config.created = Some("2024-01-01T00:00:00Z".into());
    config.config.cmd = Some(vec!["/bin/sh".into()]);
    config.config.env = vec!["PATH=/usr/bin:/bin".into()];
    let mut diff_ids = Vec::new();
    for c in contents {
        let tar = layer_tar(c);
        let gz = gzip_stored(&tar);
        diff_ids.push(sha256_digest(&tar));
        descs.push(blobs.add(media_types::OCI_LAYER_TAR_GZIP, gz.clone()));
        config.history.push(History {
            created: Some("2024-01-01T00:00:00Z".into()),
            created_by: Some("COPY hello.txt /etc/".into()),
            ..History::default()
        });
        layers.push((tar, gz));
    }
    config.rootfs = RootFs::layers(diff_ids);
    let config_bytes = to_canonical_json(&config).unwrap();
    let config_desc = blobs.add(media_types::OCI_CONFIG, config_bytes.clone());
    let manifest = Manifest::new(config_desc, descs);
    let manifest_bytes = to_canonical_json(&manifest).unwrap();
    let manifest_desc = blobs.add(media_types::OCI_MANIFEST, manifest_bytes.clone());
    let mut image = ImageRef::new(manifest_desc);
    for n in names {
        image = image.with_name(ImageName::parse(n).unwrap());
    }
    TestImage {
        blobs,
        image,
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        layers,
    }
}

pub fn hello_image() -> TestImage {
    image_with(&[HELLO], &["kiln-test/hello:1.0"])
}

/// (path, type, mode, uid, gid, mtime, size, link target) of every entry.
pub type Listed = (
    String,
    tar::EntryType,
    u32,
    u64,
    u64,
    u64,
    u64,
    Option<String>,
);

pub fn list_tar(bytes: &[u8]) -> Vec<Listed> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                h.size().unwrap(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap()),
            )
        })
        .collect()
}

pub fn tar_file(bytes: &[u8], path: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == path.as_bytes() {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("{path} not in archive");
}

/// One entry of a crafted archive. Names are written raw, so hostile ones survive.
pub enum Craft<'a> {
    File(&'a str, Vec<u8>),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        u.name[..name.len()].copy_from_slice(name.as_bytes());
        u.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h.set_cksum();
    h
}

pub fn craft(entries: &[Craft<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Craft::File(name, data) => {
                let h = raw_header(name, tar::EntryType::Regular, data.len() as u64, "");
                b.append(&h, &data[..]).unwrap();
            }
            Craft::Dir(name) => {
                let h = raw_header(name, tar::EntryType::Directory, 0, "");
                b.append(&h, &[][..]).unwrap();
            }
            Craft::Symlink(name, target) => {
                let h = raw_header(name, tar::EntryType::Symlink, 0, target);
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Every regular file and symlink of `bytes` as crafted entries, with `edit` applied to files
/// (return `None` to drop one).
pub fn rewrite(bytes: &[u8], mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<Owned> {
    let mut a = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        match e.header().entry_type() {
            tar::EntryType::Regular => {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                if let Some(v) = edit(&path, v) {
                    out.push((path, Some(v), None));
                }
            }
            tar::EntryType::Symlink => {
                let l = String::from_utf8(e.link_name_bytes().unwrap().into_owned()).unwrap();
                out.push((path, None, Some(l)));
            }
            _ => {}
        }
    }
    out
}

/// (path, file content, symlink target) of a crafted entry; neither content nor target: a
/// directory.
pub type Owned = (String, Option<Vec<u8>>, Option<String>);

pub fn craft_owned(entries: &[Owned]) -> Vec<u8> {
    let list: Vec<Craft<'_>> = entries
        .iter()
        .map(|(p, data, link)| match (data, link) {
            (_, Some(l)) => Craft::Symlink(p, l),
            (Some(d), None) => Craft::File(p, d.clone()),
            (None, None) => Craft::Dir(p),
        })
        .collect();
    craft(&list)
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

pub fn descriptor_json(d: &Descriptor) -> String {
    String::from_utf8(to_canonical_json(d).unwrap()).unwrap()
}
