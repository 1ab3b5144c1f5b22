// The official @supabase/realtime-js client against syncgate, changing only
// the URL: postgres_changes with a filter, INSERT/UPDATE/DELETE through REST,
// setAuth, isolation between users, and the channel closing at token expiry.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RealtimeClient } from '@supabase/realtime-js';
import { Syncgate, waitFor } from './syncgate.mjs';

let sg;
before(async () => { sg = await Syncgate.start(); });
after(async () => { await sg?.destroy(); });

function client(apikey) {
  return new RealtimeClient(sg.wsBase, { params: { apikey }, transport: WebSocket, heartbeatIntervalMs: 25000 });
}

function subscribe(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err || new Error(status));
    });
  });
}

test('realtime-js receives filtered INSERT, UPDATE and DELETE, survives setAuth, and sees no other user', async () => {
  const ann = sg.addUser('ann@example.com');
  const bob = sg.addUser('bob@example.com');
  const anon = sg.cli('token', '--anon');
  const c1 = (await sg.api('POST', '/api/clients', ann.token, { name: 'Client One' })).body;
  const c2 = (await sg.api('POST', '/api/clients', ann.token, { name: 'Client Two' })).body;

  const annRt = client(anon);
  await annRt.setAuth(ann.token);
  const got = [];
  const annCh = annRt
    .channel('meetings-of-c1')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'meetings', filter: `client_id=eq.${c1.id}` }, (p) => got.push(p));
  await subscribe(annCh);

  const bobRt = client(anon);
  await bobRt.setAuth(bob.token);
  const bobGot = [];
  const bobCh = bobRt
    .channel('everything')
    .on('postgres_changes', { event: '*', schema: 'public' }, (p) => bobGot.push(p))
    .on('postgres_changes', { event: '*', schema: 'public', table: 'meetings', filter: `client_id=eq.${c1.id}` }, (p) => bobGot.push(p));
  await subscribe(bobCh);

  const created = await sg.api('POST', '/api/meetings', ann.token, {
    title: 'Intro', starts_at: '2026-12-01T10:00:00Z', ends_at: '2026-12-01T11:00:00Z', client_id: c1.id,
  });
  assert.equal(created.status, 201);
  await sg.api('POST', '/api/meetings', ann.token, {
    title: 'Other client', starts_at: '2026-12-01T12:00:00Z', ends_at: '2026-12-01T13:00:00Z', client_id: c2.id,
  });
  let ms = await waitFor(() => got.length >= 1, 10000, 'the INSERT');
  console.log(`INSERT arrived after ${ms} ms`);
  const ins = got[0];
  assert.equal(ins.eventType, 'INSERT');
  assert.equal(ins.schema, 'public');
  assert.equal(ins.table, 'meetings');
  assert.deepEqual(ins.new, created.body);
  assert.deepEqual(ins.old, {});
  assert.match(ins.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(ins.errors, null);

  // A fresh token through setAuth: no rejoin, events keep flowing.
  const fresh = sg.cli('token', '--user', String(ann.id), '--ttl', '2h');
  await annRt.setAuth(fresh);
  const id = created.body.id;
  const updated = await sg.api('PATCH', `/api/meetings/${id}`, ann.token, { notes: 'bring documents' });
  ms = await waitFor(() => got.length >= 2, 10000, 'the UPDATE');
  console.log(`UPDATE arrived after ${ms} ms`);
  assert.equal(got[1].eventType, 'UPDATE');
  assert.deepEqual(got[1].new, updated.body);
  assert.deepEqual(got[1].old, created.body);

  const del = await sg.api('DELETE', `/api/meetings/${id}`, ann.token);
  assert.equal(del.status, 204);
  ms = await waitFor(() => got.length >= 3, 10000, 'the DELETE');
  console.log(`DELETE arrived after ${ms} ms`);
  assert.equal(got[2].eventType, 'DELETE');
  assert.deepEqual(got[2].new, {});
  assert.deepEqual(got[2].old, updated.body);
  assert.equal(got.length, 3, 'the other client\'s meeting was filtered out');

  // Bob's own change reaches him, proving his socket works; Ann's never did.
  await sg.api('POST', '/api/clients', bob.token, { name: "Bob's client" });
  await waitFor(() => bobGot.length >= 1, 10000, "Bob's own change");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(bobGot.length, 1, 'Bob sees only his own row');
  assert.equal(bobGot[0].new.name, "Bob's client");

  await annRt.removeAllChannels();
  await bobRt.removeAllChannels();
  annRt.disconnect();
  bobRt.disconnect();
});

test('realtime-js sees its channel closed when its token expires', async () => {
  const cid = sg.addUser('carol@example.com');
  const anon = sg.cli('token', '--anon');
  const short = sg.cli('token', '--user', String(cid.id), '--ttl', '3s');
  const rt = client(anon);
  await rt.setAuth(short);
  const statuses = [];
  const systems = [];
  const ch = rt
    .channel('expiring')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'meetings' }, () => {})
    .on('system', {}, (p) => systems.push(p));
  await new Promise((resolve, reject) => {
    ch.subscribe((status, err) => {
      statuses.push(status);
      if (status === 'SUBSCRIBED') resolve();
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err || new Error(status));
    });
  });
  const ms = await waitFor(() => ch.state === 'closed', 10000, 'the channel to close at token expiry');
  console.log(`channel closed ${ms} ms after subscribing with a 3 s token`);
  assert.ok(systems.some((s) => /expired/i.test(s.message || '')), `a system message says the token expired: ${JSON.stringify(systems)}`);
  rt.disconnect();
});
