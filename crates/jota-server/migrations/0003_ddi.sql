-- hawkBit DDI: artifacts carry the hashes DDI clients check (SWUpdate's suricatta verifies
-- sha1), and devices the attributes they report through configData.
ALTER TABLE artifacts ADD COLUMN sha1 TEXT NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN md5 TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
