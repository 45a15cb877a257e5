//! Which chunks a device can assemble from its seed and which it must fetch.

use crate::seed::Seed;
use jota_bundle::index::BlockMap;
use jota_bundle::manifest::Component;
use jota_bundle::read::Parsed;
use serde::Serialize;

/// The plan for one component.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ComponentPlan {
    /// Component name.
    pub name: String,
    /// Per chunk: every block of it is in the seed.
    pub seeded: Vec<bool>,
    /// Chunks to fetch.
    pub fetch_chunks: usize,
    /// Compressed bytes to fetch.
    pub fetch_bytes: u64,
    /// Uncompressed bytes found in the seed.
    pub seeded_bytes: u64,
}

/// The plan for a bundle.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    /// Per component, in manifest order.
    pub components: Vec<ComponentPlan>,
    /// The bundle's front (header, manifest, signatures, index), fetched first.
    pub front_bytes: u64,
    /// Total compressed bytes to fetch for chunks (before range coalescing).
    pub fetch_bytes: u64,
    /// What a full download would be.
    pub full_bytes: u64,
}

/// Plans one component: a chunk is seeded when the seed has every one of its blocks.
pub fn plan_component(c: &Component, map: &BlockMap, seed: Option<&Seed>) -> ComponentPlan {
    let mut p = ComponentPlan {
        name: c.name.clone(),
        ..ComponentPlan::default()
    };
    let mut id = 0usize;
    for ch in &c.chunks {
        let ids = id..id + ch.blocks as usize;
        id = ids.end;
        let ok = seed.is_some_and(|s| {
            map.keys
                .get(ids)
                .is_some_and(|keys| keys.iter().all(|k| s.found.contains_key(k)))
        });
        p.seeded.push(ok);
        if ok {
            p.seeded_bytes += ch.length;
        } else {
            p.fetch_chunks += 1;
            p.fetch_bytes += ch.size;
        }
    }
    p
}

/// Plans a bundle with one optional seed per component.
pub fn plan(parsed: &Parsed, seeds: &[Option<Seed>]) -> Plan {
    let mut p = Plan {
        front_bytes: parsed.header.payload_offset(),
        full_bytes: parsed.header.total_len(),
        ..Plan::default()
    };
    for (i, c) in parsed.manifest.components.iter().enumerate() {
        let cp = plan_component(c, &parsed.maps[i], seeds.get(i).and_then(|s| s.as_ref()));
        p.fetch_bytes += cp.fetch_bytes;
        p.components.push(cp);
    }
    p
}
