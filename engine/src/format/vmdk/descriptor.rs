//! The vmdk text descriptor: a strict line grammar (as oslo's inspector), an allow-list of
//! create types and extents that must stay inside this file.

use super::super::error::{ImageError, ImageResult};

/// Descriptors above this size are refused without being read.
pub const MAX_DESCRIPTOR: u64 = 1 << 20;

/// Create types Ember reads (Cinder's `vmdk_allowed_types` default).
pub const ALLOWED_CREATE_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub access: String,
    pub sectors: u64,
    pub kind: String,
    pub name: String,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub create_type: Option<String>,
    pub parent_cid: Option<String>,
    pub parent_hint: Option<String>,
    pub extents: Vec<Extent>,
}

fn err(reason: impl Into<String>) -> ImageError {
    ImageError::Descriptor {
        reason: reason.into(),
    }
}

/// Parses descriptor text (NUL padding after the text is ignored).
pub fn parse(bytes: &[u8]) -> ImageResult<Descriptor> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = &bytes[..end];
    if !text.is_ascii() {
        return Err(err("not ASCII"));
    }
    let text = std::str::from_utf8(text).map_err(|_| err("not ASCII"))?;
    let mut d = Descriptor::default();
    for (no, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            d.extents.push(parse_extent(line, no + 1)?);
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(err(format!(
                "line {}: not a key=value or extent line",
                no + 1
            )));
        };
        let k = k.trim();
        let v = v.trim().trim_matches('"').to_string();
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(err(format!("line {}: bad key", no + 1)));
        }
        // qemu finds `createType` case-sensitively (the first one), oslo lower-cases the text:
        // a second spelling would let each read a different type.
        if k.eq_ignore_ascii_case("createType") {
            if k != "createType" || d.create_type.is_some() {
                return Err(err(format!(
                    "line {}: createType given twice or spelt {k:?}",
                    no + 1
                )));
            }
            d.create_type = Some(v);
            continue;
        }
        match k {
            "parentCID" => d.parent_cid = Some(v),
            "parentFileNameHint" => d.parent_hint = Some(v),
            _ => {}
        }
    }
    Ok(d)
}

fn parse_extent(line: &str, no: usize) -> ImageResult<Extent> {
    // ACCESS SECTORS TYPE ["NAME" [OFFSET]]
    let (head, name_part) = match line.find('"') {
        Some(q) => (&line[..q], Some(&line[q..])),
        None => (line, None),
    };
    let mut it = head.split_whitespace();
    let access = it.next().unwrap_or_default().to_string();
    let sectors = it
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err(format!("line {no}: bad extent size")))?;
    let kind = it
        .next()
        .ok_or_else(|| err(format!("line {no}: missing extent type")))?
        .to_string();
    if it.next().is_some() {
        return Err(err(format!("line {no}: unexpected text in extent line")));
    }
    let name = match name_part {
        Some(p) => {
            let rest = &p[1..];
            let close = rest
                .find('"')
                .ok_or_else(|| err(format!("line {no}: unterminated extent name")))?;
            let tail = rest[close + 1..].trim();
            if !tail.is_empty() && tail.parse::<u64>().is_err() {
                return Err(err(format!("line {no}: bad extent offset")));
            }
            rest[..close].to_string()
        }
        None => String::new(),
    };
    Ok(Extent {
        access,
        sectors,
        kind,
        name,
    })
}

/// Safety rules for a descriptor embedded in a sparse extent of `capacity` sectors.
pub fn check(d: &Descriptor, capacity_sectors: u64) -> ImageResult<()> {
    let ct = d.create_type.clone().unwrap_or_default();
    if !ALLOWED_CREATE_TYPES.contains(&ct.as_str()) {
        return Err(ImageError::CreateType { create_type: ct });
    }
    if d.parent_hint.is_some()
        || d.parent_cid
            .as_deref()
            .is_some_and(|p| !p.eq_ignore_ascii_case("ffffffff"))
    {
        return Err(err(
            "delta disk with a parent (backing file) is not allowed",
        ));
    }
    for e in &d.extents {
        if e.name.contains('/') || e.name.contains('\\') {
            return Err(ImageError::ExternalExtent {
                name: e.name.clone(),
                kind: "extent file name contains a path separator".into(),
            });
        }
        if e.kind != "SPARSE" {
            return Err(ImageError::ExternalExtent {
                name: e.name.clone(),
                kind: format!("{} extent in a {ct} image", e.kind),
            });
        }
    }
    match d.extents.len() {
        0 => Err(err("no extents")),
        1 if d.extents[0].sectors == capacity_sectors => Ok(()),
        1 => Err(err(format!(
            "extent of {} sectors does not match the header capacity of {capacity_sectors}",
            d.extents[0].sectors
        ))),
        n => Err(err(format!("{n} extents in a monolithic image"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# Disk DescriptorFile\nversion=1\nCID=21137945\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n# Extent description\nRW 4096 SPARSE \"so.vmdk\"\n\nddb.virtualHWVersion = \"4\"\n";

    #[test]
    fn good_descriptor_passes() {
        let d = parse(GOOD.as_bytes()).unwrap();
        check(&d, 4096).unwrap();
    }

    #[test]
    fn hostile_descriptors_refused() {
        let flat = GOOD.replace(
            "RW 4096 SPARSE \"so.vmdk\"",
            "RW 4096 FLAT \"/etc/shadow\" 0",
        );
        let e = check(&parse(flat.as_bytes()).unwrap(), 4096)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/shadow"), "{e}");
        let flat2 = GOOD.replace("RW 4096 SPARSE \"so.vmdk\"", "RW 4096 FLAT \"other.img\" 0");
        assert!(check(&parse(flat2.as_bytes()).unwrap(), 4096).is_err());
        let ct = GOOD.replace("streamOptimized", "monolithicFlat");
        let e = check(&parse(ct.as_bytes()).unwrap(), 4096)
            .unwrap_err()
            .to_string();
        assert!(e.contains("monolithicFlat"), "{e}");
        let two = GOOD.replace("\n\nddb", "\nRW 1 SPARSE \"x\"\nddb");
        assert!(check(&parse(two.as_bytes()).unwrap(), 4096).is_err());
        assert!(parse(b"garbage line\n").is_err());
        assert!(parse("createType=\"monolithicSparse\"\n\u{e9}".as_bytes()).is_err());
        let twice = GOOD.replace(
            "createType=\"streamOptimized\"",
            "CREATETYPE=\"streamOptimized\"\ncreateType=\"monolithicFlat\"",
        );
        let e = parse(twice.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("createType given twice"), "{e}");
        let parent = GOOD.replace("parentCID=ffffffff", "parentCID=12345678");
        assert!(check(&parse(parent.as_bytes()).unwrap(), 4096).is_err());
    }
}
