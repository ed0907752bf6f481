"""The peer of the sims benchmark: the seed's stack (FastAPI + asyncpg under
uvicorn) serving GetSim's SELECT as JSON over HTTP/1.1, so that
tools/bench/sims.sh prints onceiot / FastAPI from one run on the same
database. Run by sims.sh as
  PEER_DB_URL=... /usr/bin/python3 -m uvicorn peer_fastapi:app --workers 2
GET /sims/{iccid}?org=N answers the SIM (200) or 404."""
import os

import asyncpg
from fastapi import FastAPI, HTTPException

SQL = """
SELECT s.id, s.iccid, s.imsi, s.msisdn, s.imei, s.imei_lock, s.status, s.label,
       host(s.ip_address) AS ip, s.organization_id, s.customer_org_id,
       array_to_string(s.tags, ',') AS tags_csv, s.metadata::text AS metadata_json,
       (extract(epoch FROM s.activation_date) * 1000000)::bigint AS activation_us,
       (extract(epoch FROM s.suspension_date) * 1000000)::bigint AS suspension_us,
       (extract(epoch FROM s.termination_date) * 1000000)::bigint AS termination_us,
       (extract(epoch FROM s.expiry_date) * 1000000)::bigint AS expiry_us,
       (extract(epoch FROM s.created_at) * 1000000)::bigint AS created_us,
       (extract(epoch FROM s.updated_at) * 1000000)::bigint AS updated_us,
       s.data_volume, s.data_used, s.data_remaining, s.data_threshold_reached,
       s.sms_volume, s.sms_used, s.sms_remaining, s.sms_threshold_reached
  FROM sims.sim_summaries s
 WHERE s.iccid = $1 AND ($2::bigint IS NULL OR s.organization_id = $2::bigint)
"""

app = FastAPI()
pool = None


@app.on_event("startup")
async def startup():
    global pool
    pool = await asyncpg.create_pool(os.environ["PEER_DB_URL"], min_size=4, max_size=4)


@app.on_event("shutdown")
async def shutdown():
    await pool.close()


@app.get("/sims/{iccid}")
async def get_sim(iccid: str, org: int):
    row = await pool.fetchrow(SQL, iccid, org)
    if row is None:
        raise HTTPException(status_code=404, detail="no such SIM")
    return dict(row)
