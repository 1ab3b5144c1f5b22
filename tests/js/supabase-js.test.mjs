// The real @supabase/supabase-js (pinned in package.json) against syncgate's
// /rest/v1 and /realtime/v1, with clients created the way a team moving from
// Supabase creates them: createClient(url, anonKey, { accessToken }). Covers
// lists with filters (eq, neq, gt/gte/lt/lte on timestamps, like/ilike,
// is null / not null, in, or with a nested and), order on several keys with
// nullsFirst, range with an exact count, head counts, .single() and
// .maybeSingle(), inserts of one and many rows with and without .select(),
// updates and deletes by filter, the error objects supabase-js hands back
// (21000, 42703, PGRST204, 23505, 42501, 22P02, PGRST116), isolation between
// users, the anon key alone, an admin, and a page's from().insert/update/delete
// arriving through channel().on('postgres_changes') of another client.
// Everything runs once per engine: SQLite, and PostgreSQL when
// SYNCGATE_JS_DATABASE_URL names an (empty) database for it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from '@supabase/supabase-js';
import { Syncgate, waitFor } from './syncgate.mjs';

const engines = [{ name: 'SQLite', env: {} }];
if (process.env.SYNCGATE_JS_DATABASE_URL) {
  engines.push({ name: 'PostgreSQL', env: { SYNCGATE_DATABASE__URL: process.env.SYNCGATE_JS_DATABASE_URL } });
}

// Node.js before 22 has no global WebSocket; supabase-js then needs one
// handed in (its documented workaround). Newer Node.js uses its own.
const realtime = globalThis.WebSocket ? {} : { transport: WebSocket };

// Users are created per run with a suffix, so a database that already holds
// an earlier run's users (PostgreSQL kept between local runs) still works.
const run = `${process.pid}-${Date.now()}`;

for (const engine of engines) {
  describe(`supabase-js on ${engine.name}`, () => {
    let sg;
    let anonKey;
    let ann;
    let bob;
    let boss;
    let sbAnn;
    let sbBob;
    let sbBoss;
    const clients = {};
    let meetings;

    /** What a team writes: the anon key, and the signed-in user's token from their own sign-in. */
    const connect = (userToken) => createClient(sg.base, anonKey, { accessToken: async () => userToken, realtime });

    before(async () => {
      sg = await Syncgate.start(engine.env);
      anonKey = sg.cli('token', '--anon');
      ann = sg.addUser(`ann-${run}@example.com`);
      bob = sg.addUser(`bob-${run}@example.com`);
      boss = sg.addUser(`boss-${run}@example.com`, 'admin');
      sbAnn = connect(ann.token);
      sbBob = connect(bob.token);
      sbBoss = connect(boss.token);
    });

    after(async () => {
      for (const sb of [sbAnn, sbBob, sbBoss]) {
        await sb?.removeAllChannels();
        sb?.realtime.disconnect();
      }
      await sg?.destroy();
    });

    test('insert many with .select(), one with .select().single(), and one without .select()', async () => {
      // Objects with different keys: supabase-js sends columns= with their union.
      const many = await sbAnn
        .from('clients')
        .insert([{ name: 'Acme', email: 'office@acme.example' }, { name: 'Beta', phone: '+49 30 1234' }])
        .select();
      assert.equal(many.error, null);
      assert.equal(many.status, 201);
      assert.equal(many.data.length, 2);
      assert.deepEqual(many.data.map((c) => [c.name, c.email, c.phone, c.user_id]), [
        ['Acme', 'office@acme.example', null, ann.id],
        ['Beta', null, '+49 30 1234', ann.id],
      ]);
      assert.ok(many.data.every((c) => Number.isInteger(c.id) && typeof c.created_at === 'string'));
      [clients.acme, clients.beta] = many.data;

      const one = await sbAnn.from('clients').insert({ name: 'Gamma', email: 'gamma@example.com' }).select('id, name').single();
      assert.equal(one.error, null);
      assert.equal(one.status, 201);
      assert.deepEqual(Object.keys(one.data), ['id', 'name']);
      assert.equal(one.data.name, 'Gamma');
      clients.gamma = one.data;

      const quiet = await sbAnn.from('clients').insert({ name: 'Delta' });
      assert.deepEqual([quiet.error, quiet.data, quiet.status], [null, null, 201]);
      const { data: all } = await sbAnn.from('clients').select('name').order('name');
      assert.deepEqual(all.map((c) => c.name), ['Acme', 'Beta', 'Delta', 'Gamma']);
    });

    test('meetings inserted as an array come back in order, with the columns asked for', async () => {
      const rows = [
        { title: 'Intro call', starts_at: '2026-12-01T09:00:00Z', ends_at: '2026-12-01T09:30:00Z', client_id: clients.acme.id, location: 'Berlin' },
        { title: 'Quarterly review', starts_at: '2026-12-02T10:00:00Z', ends_at: '2026-12-02T11:00:00Z', client_id: clients.acme.id, location: null },
        { title: 'quarterly REVIEW follow-up', starts_at: '2026-12-03T10:00:00Z', ends_at: '2026-12-03T10:30:00Z', client_id: clients.beta.id, location: 'Hamburg' },
        { title: 'Lunch', starts_at: '2026-12-04T12:00:00Z', ends_at: '2026-12-04T13:00:00Z', client_id: null, location: null },
        { title: 'Contract signing', starts_at: '2026-12-05T15:00:00Z', ends_at: '2026-12-05T16:00:00Z', client_id: clients.beta.id, location: 'Munich' },
        { title: 'Wrap-up', starts_at: '2026-12-06T08:00:00Z', ends_at: '2026-12-06T08:45:00Z', client_id: null, location: 'Berlin' },
      ];
      const { data, error, status } = await sbAnn.from('meetings').insert(rows).select('id,title,starts_at,client_id,location,user_id');
      assert.equal(error, null);
      assert.equal(status, 201);
      assert.deepEqual(data.map((m) => m.title), rows.map((r) => r.title));
      assert.deepEqual(Object.keys(data[0]), ['id', 'title', 'starts_at', 'client_id', 'location', 'user_id']);
      assert.equal(data[0].starts_at, '2026-12-01T09:00:00.000Z');
      assert.ok(data.every((m) => m.user_id === ann.id));
      meetings = Object.fromEntries(data.map((m) => [m.title, m]));
    });

    test('lists with filters', async () => {
      const titles = async (q) => {
        const { data, error, status } = await q.order('starts_at');
        assert.equal(error, null, JSON.stringify(error));
        assert.equal(status, 200);
        return data.map((m) => m.title);
      };
      const m = () => sbAnn.from('meetings').select('title');
      assert.deepEqual(await titles(m().eq('client_id', clients.acme.id)), ['Intro call', 'Quarterly review']);
      assert.deepEqual(await titles(m().neq('title', 'Lunch')), ['Intro call', 'Quarterly review', 'quarterly REVIEW follow-up', 'Contract signing', 'Wrap-up']);
      assert.deepEqual(await titles(m().gt('starts_at', '2026-12-04T12:00:00Z')), ['Contract signing', 'Wrap-up']);
      assert.deepEqual(await titles(m().gte('starts_at', '2026-12-04T12:00:00Z')), ['Lunch', 'Contract signing', 'Wrap-up']);
      // An offset in the value is the instant it names (12:00+01:00 is 11:00Z).
      assert.deepEqual(await titles(m().lt('starts_at', '2026-12-02T12:00:00+01:00')), ['Intro call', 'Quarterly review']);
      assert.deepEqual(await titles(m().lte('starts_at', '2026-12-02T10:00:00.000Z')), ['Intro call', 'Quarterly review']);
      assert.deepEqual(await titles(m().gte('starts_at', '2026-12-02').lt('starts_at', '2026-12-04')), ['Quarterly review', 'quarterly REVIEW follow-up']);
      assert.deepEqual(await titles(m().like('title', '%REVIEW%')), ['quarterly REVIEW follow-up']);
      assert.deepEqual(await titles(m().like('title', '%review')), ['Quarterly review']);
      assert.deepEqual(await titles(m().ilike('title', '%review%')), ['Quarterly review', 'quarterly REVIEW follow-up']);
      assert.deepEqual(await titles(m().like('title', 'Wrap*')), ['Wrap-up']);
      assert.deepEqual(await titles(m().is('location', null)), ['Quarterly review', 'Lunch']);
      assert.deepEqual(await titles(m().not('location', 'is', null)), ['Intro call', 'quarterly REVIEW follow-up', 'Contract signing', 'Wrap-up']);
      assert.deepEqual(await titles(m().is('client_id', null)), ['Lunch', 'Wrap-up']);
      assert.deepEqual(await titles(m().in('location', ['Berlin', 'Munich'])), ['Intro call', 'Contract signing', 'Wrap-up']);
      assert.deepEqual(await titles(m().in('id', [meetings.Lunch.id, meetings['Wrap-up'].id])), ['Lunch', 'Wrap-up']);
      // A value with a comma and a parenthesis: supabase-js quotes it.
      assert.deepEqual(await titles(m().in('title', ['Lunch', 'a, (b)'])), ['Lunch']);
      assert.deepEqual(
        await titles(m().or(`title.eq.Lunch,and(client_id.eq.${clients.beta.id},starts_at.gte.2026-12-04T00:00:00Z)`)),
        ['Lunch', 'Contract signing'],
      );
      assert.deepEqual(
        await titles(m().eq('location', 'Berlin').or('title.ilike.*wrap*,starts_at.lt.2026-12-01T10:00:00Z')),
        ['Intro call', 'Wrap-up'],
      );
      assert.deepEqual(await titles(m().eq('title', 'No such meeting')), []);
      // PostgreSQL's NULL logic: neq, not.eq and not.in never pick a NULL.
      assert.deepEqual(await titles(m().neq('location', 'Berlin')), ['quarterly REVIEW follow-up', 'Contract signing']);
      assert.deepEqual(await titles(m().not('location', 'eq', 'Berlin')), ['quarterly REVIEW follow-up', 'Contract signing']);
      assert.deepEqual(await titles(m().not('client_id', 'in', `(${clients.acme.id})`)), ['quarterly REVIEW follow-up', 'Contract signing']);
      assert.deepEqual(await titles(m().or('location.neq.Berlin,location.is.null')), ['Quarterly review', 'quarterly REVIEW follow-up', 'Lunch', 'Contract signing']);
      // The same instant written with an offset, and match() as several eq.
      assert.deepEqual(await titles(m().eq('starts_at', '2026-12-01T10:00:00+01:00')), ['Intro call']);
      assert.deepEqual(await titles(m().match({ client_id: clients.beta.id, location: 'Hamburg' })), ['quarterly REVIEW follow-up']);
      assert.deepEqual(await titles(m().is('all_day', false).limit(2)), ['Intro call', 'Quarterly review']);
    });

    test('order on several keys with nullsFirst, range with an exact count, and head counts', async () => {
      const { data: ordered, error } = await sbAnn
        .from('meetings')
        .select('title,client_id')
        .order('client_id', { ascending: true, nullsFirst: true })
        .order('starts_at', { ascending: false });
      assert.equal(error, null);
      assert.deepEqual(ordered.map((m) => m.title), [
        'Wrap-up', 'Lunch', // client_id null, first; latest first
        'Quarterly review', 'Intro call', // Acme
        'Contract signing', 'quarterly REVIEW follow-up', // Beta
      ]);
      const { data: nullsLast } = await sbAnn.from('meetings').select('title').order('client_id', { ascending: false }).order('starts_at');
      // Descending puts NULLs first unless told otherwise, as PostgreSQL does.
      assert.deepEqual(nullsLast.map((m) => m.title).slice(0, 2), ['Lunch', 'Wrap-up']);
      const { data: nullsLastAsked } = await sbAnn
        .from('meetings')
        .select('title')
        .order('client_id', { ascending: false, nullsFirst: false })
        .order('starts_at');
      assert.deepEqual(nullsLastAsked.map((m) => m.title).slice(-2), ['Lunch', 'Wrap-up']);

      const page = await sbAnn.from('meetings').select('title', { count: 'exact' }).order('starts_at').range(1, 3);
      assert.equal(page.error, null);
      assert.equal(page.count, 6, 'count is the total');
      assert.deepEqual(page.data.map((m) => m.title), ['Quarterly review', 'quarterly REVIEW follow-up', 'Lunch']);
      assert.equal(page.status, 206);

      const filtered = await sbAnn.from('meetings').select('*', { count: 'exact' }).not('client_id', 'is', null).range(0, 1);
      assert.equal(filtered.count, 4);
      assert.equal(filtered.data.length, 2);

      const head = await sbAnn.from('meetings').select('*', { count: 'exact', head: true }).eq('client_id', clients.beta.id);
      assert.deepEqual([head.error, head.data, head.count, head.status], [null, null, 2, 200]);

      const none = await sbAnn.from('meetings').select('*', { count: 'exact', head: true }).eq('title', 'nothing');
      assert.deepEqual([none.error, none.count], [null, 0]);
    });

    test('.single() on one row and on none, .maybeSingle() on none', async () => {
      const one = await sbAnn.from('meetings').select('id,title').eq('title', 'Lunch').single();
      assert.deepEqual([one.error, one.status], [null, 200]);
      assert.deepEqual(one.data, { id: meetings.Lunch.id, title: 'Lunch' });

      const zero = await sbAnn.from('meetings').select('*').eq('title', 'nothing').single();
      assert.equal(zero.data, null);
      assert.equal(zero.status, 406);
      assert.equal(zero.error.code, 'PGRST116');
      assert.equal(zero.error.message, 'Cannot coerce the result to a single JSON object');
      assert.equal(zero.error.details, 'The result contains 0 rows');

      const many = await sbAnn.from('meetings').select('*').not('client_id', 'is', null).single();
      assert.equal(many.status, 406);
      assert.equal(many.error.code, 'PGRST116');
      assert.equal(many.error.details, 'The result contains 4 rows');

      const maybe = await sbAnn.from('meetings').select('*').eq('title', 'nothing').maybeSingle();
      assert.deepEqual([maybe.error, maybe.data, maybe.status], [null, null, 200]);
      const maybeOne = await sbAnn.from('clients').select('name').eq('id', clients.gamma.id).maybeSingle();
      assert.deepEqual([maybeOne.error, maybeOne.data], [null, { name: 'Gamma' }]);
    });

    test('update and delete with filters', async () => {
      const upd = await sbAnn
        .from('meetings')
        .update({ notes: 'bring the contract', location: 'Online' })
        .eq('client_id', clients.beta.id)
        .gte('starts_at', '2026-12-05T00:00:00Z')
        .select('title,notes,location');
      assert.equal(upd.error, null);
      assert.equal(upd.status, 200);
      assert.deepEqual(upd.data, [{ title: 'Contract signing', notes: 'bring the contract', location: 'Online' }]);

      const quiet = await sbAnn.from('meetings').update({ notes: 'agenda sent' }).in('id', [meetings['Intro call'].id, meetings['Quarterly review'].id]);
      assert.deepEqual([quiet.error, quiet.data, quiet.status], [null, null, 204]);
      const { data: notes } = await sbAnn.from('meetings').select('title,notes').not('notes', 'is', null).order('starts_at');
      assert.deepEqual(notes, [
        { title: 'Intro call', notes: 'agenda sent' },
        { title: 'Quarterly review', notes: 'agenda sent' },
        { title: 'Contract signing', notes: 'bring the contract' },
      ]);

      const single = await sbAnn.from('clients').update({ phone: '+49 40 555' }).eq('id', clients.gamma.id).select().single();
      assert.equal(single.error, null);
      assert.equal(single.data.phone, '+49 40 555');
      assert.equal(single.data.email, 'gamma@example.com');

      const del = await sbAnn.from('clients').delete().eq('name', 'Delta').select('name');
      assert.deepEqual([del.error, del.data, del.status], [null, [{ name: 'Delta' }], 200]);
      const delQuiet = await sbAnn.from('clients').delete({ count: 'exact' }).eq('name', 'Delta');
      assert.deepEqual([delQuiet.error, delQuiet.data, delQuiet.count, delQuiet.status], [null, null, 0, 204]);
      const { count } = await sbAnn.from('clients').select('*', { count: 'exact', head: true });
      assert.equal(count, 3);
    });

    test('update or delete without a filter is refused, and nothing changes', async () => {
      const upd = await sbAnn.from('meetings').update({ notes: 'everything' });
      assert.equal(upd.status, 400);
      assert.equal(upd.data, null);
      assert.equal(upd.error.code, '21000');
      assert.equal(upd.error.message, 'UPDATE requires a WHERE clause');
      const del = await sbAnn.from('meetings').delete();
      assert.equal(del.status, 400);
      assert.equal(del.error.code, '21000');
      assert.equal(del.error.message, 'DELETE requires a WHERE clause');
      const { count } = await sbAnn.from('meetings').select('*', { count: 'exact', head: true }).eq('notes', 'everything');
      assert.equal(count, 0);
      const { count: all } = await sbAnn.from('meetings').select('*', { count: 'exact', head: true });
      assert.equal(all, 6);
    });

    test('the error objects supabase-js hands back', async () => {
      const unknownFilter = await sbAnn.from('meetings').select('*').eq('colour', 'red');
      assert.equal(unknownFilter.status, 400);
      assert.equal(unknownFilter.data, null);
      assert.equal(unknownFilter.error.code, '42703');
      assert.match(unknownFilter.error.message, /colour does not exist/);

      const unknownSelect = await sbAnn.from('clients').select('id,colour');
      assert.deepEqual([unknownSelect.status, unknownSelect.error.code], [400, '42703']);

      const unknownOrder = await sbAnn.from('clients').select('id').order('colour');
      assert.deepEqual([unknownOrder.status, unknownOrder.error.code], [400, '42703']);

      // A key in the body that is no column: PostgREST's schema-cache error.
      const unknownBody = await sbAnn.from('clients').insert({ name: 'X', colour: 'red' }).select();
      assert.equal(unknownBody.status, 400);
      assert.equal(unknownBody.error.code, 'PGRST204');
      assert.equal(unknownBody.error.message, "Could not find the 'colour' column of 'clients' in the schema cache");

      const taken = await sbAnn.from('clients').insert({ name: 'Acme again', email: 'office@acme.example' }).select();
      assert.equal(taken.status, 409);
      assert.equal(taken.data, null);
      assert.equal(taken.error.code, '23505');
      // Another user may use the same email for a client of their own.
      const bobsAcme = await sbBob.from('clients').insert({ name: 'Acme', email: 'office@acme.example' }).select().single();
      assert.equal(bobsAcme.error, null);

      const foreignOwner = await sbAnn.from('clients').insert({ name: 'For Bob', user_id: bob.id }).select();
      assert.equal(foreignOwner.status, 403);
      assert.equal(foreignOwner.error.code, '42501');

      const badType = await sbAnn.from('meetings').select('*').eq('client_id', 'x');
      assert.equal(badType.status, 400);
      assert.equal(badType.error.code, '22P02');
      assert.equal(badType.error.message, 'invalid input syntax for type bigint: "x"');

      const badTime = await sbAnn.from('meetings').select('*').gt('starts_at', 'tomorrow');
      assert.deepEqual([badTime.status, badTime.error.code], [400, '22P02']);

      const noTable = await sbAnn.from('invoices').select('*');
      assert.equal(noTable.status, 404);
      assert.equal(noTable.error.code, 'PGRST205');

      // Every refused write above left nothing behind.
      const { data: names } = await sbAnn.from('clients').select('name').order('name');
      assert.deepEqual(names.map((c) => c.name), ['Acme', 'Beta', 'Gamma']);
    });

    test("isolation: another user sees none of the rows and changes none; the anon key reads nothing and writes nothing", async () => {
      const { data: bobMeetings, error } = await sbBob.from('meetings').select('*');
      assert.equal(error, null);
      assert.deepEqual(bobMeetings, []);
      const { data: bobClients } = await sbBob.from('clients').select('name');
      assert.deepEqual(bobClients, [{ name: 'Acme' }]);
      const target = meetings.Lunch.id;

      const counted = await sbBob.from('meetings').select('*', { count: 'exact', head: true }).eq('id', target);
      assert.equal(counted.count, 0);
      const single = await sbBob.from('meetings').select('*').eq('id', target).single();
      assert.deepEqual([single.status, single.error.code], [406, 'PGRST116']);

      const upd = await sbBob.from('meetings').update({ title: 'Hijacked' }).eq('id', target).select();
      assert.deepEqual([upd.error, upd.data, upd.status], [null, [], 200]);
      const updCount = await sbBob.from('meetings').update({ title: 'Hijacked' }, { count: 'exact' }).eq('id', target);
      assert.deepEqual([updCount.error, updCount.count, updCount.status], [null, 0, 204]);
      const del = await sbBob.from('meetings').delete().eq('id', target).select();
      assert.deepEqual([del.error, del.data, del.status], [null, [], 200]);
      const delQuiet = await sbBob.from('meetings').delete().eq('id', target);
      assert.deepEqual([delQuiet.error, delQuiet.status], [null, 204]);

      const { data: still } = await sbAnn.from('meetings').select('title').eq('id', target).single();
      assert.deepEqual(still, { title: 'Lunch' });

      // Only the anon key, as a page before sign-in: Supabase's RLS answers no rows.
      const anon = createClient(sg.base, anonKey, { auth: { persistSession: false, autoRefreshToken: false }, realtime });
      const read = await anon.from('meetings').select('*');
      assert.deepEqual([read.error, read.data, read.status], [null, [], 200]);
      const anonCount = await anon.from('clients').select('*', { count: 'exact', head: true });
      assert.equal(anonCount.count, 0);
      const write = await anon.from('clients').insert({ name: 'Sneaky' }).select();
      assert.equal(write.status, 401);
      assert.equal(write.data, null);
      assert.equal(write.error.code, '42501');
      const anonDelete = await anon.from('meetings').delete().eq('id', target);
      assert.equal(anonDelete.status, 401);
      const { count } = await sbAnn.from('meetings').select('*', { count: 'exact', head: true });
      assert.equal(count, 6);
    });

    test('an admin sees every user\'s rows and may create one for another user', async () => {
      // Only this run's users: a PostgreSQL database kept between local runs holds others.
      const { data, error } = await sbBoss.from('clients').select('name,user_id').eq('name', 'Acme').in('user_id', [ann.id, bob.id]).order('user_id');
      assert.equal(error, null);
      assert.deepEqual(data, [{ name: 'Acme', user_id: ann.id }, { name: 'Acme', user_id: bob.id }]);
      const made = await sbBoss.from('clients').insert({ name: 'Made by the admin', user_id: ann.id }).select().single();
      assert.equal(made.error, null);
      assert.equal(made.data.user_id, ann.id);
      const seen = await sbAnn.from('clients').select('name').eq('id', made.data.id).maybeSingle();
      assert.deepEqual(seen.data, { name: 'Made by the admin' });
      const gone = await sbBoss.from('clients').delete().eq('id', made.data.id).select('id');
      assert.deepEqual(gone.data, [{ id: made.data.id }]);
    });

    test('pipeline: numbers and dates filter as PostgreSQL reads them, and a row keeps its owner', async () => {
      const { data, error } = await sbAnn
        .from('pipeline')
        .insert([
          { title: 'Small deal', stage: 'lead', value: 950.5, expected_close: '2027-01-15', client_id: clients.acme.id },
          { title: 'Big deal', stage: 'proposal', value: 25000, expected_close: '2027-03-01', client_id: clients.beta.id },
          { title: 'Someday', stage: 'lead', value: 0, expected_close: null },
        ])
        .select('title,value,expected_close', { count: 'exact' });
      assert.equal(error, null);
      assert.deepEqual(data, [
        { title: 'Small deal', value: 950.5, expected_close: '2027-01-15' },
        { title: 'Big deal', value: 25000, expected_close: '2027-03-01' },
        { title: 'Someday', value: 0, expected_close: null },
      ]);
      const cheap = await sbAnn.from('pipeline').select('title').lt('value', 1000).order('title');
      assert.deepEqual(cheap.data, [{ title: 'Small deal' }, { title: 'Someday' }]);
      const soon = await sbAnn.from('pipeline').select('title').lte('expected_close', '2027-02-01').order('title');
      assert.deepEqual(soon.data, [{ title: 'Small deal' }]);
      const badDate = await sbAnn.from('pipeline').select('title').gt('expected_close', 'soon');
      assert.deepEqual([badDate.status, badDate.error?.code], [400, '22P02']);
      const leads = await sbAnn.from('pipeline').update({ stage: 'qualified' }, { count: 'exact' }).eq('stage', 'lead').select('title,stage');
      assert.equal(leads.error, null);
      assert.equal(leads.count, 2);
      assert.deepEqual(leads.data.map((d) => d.stage), ['qualified', 'qualified']);
      const steal = await sbAnn.from('pipeline').update({ user_id: bob.id }).eq('title', 'Someday');
      assert.deepEqual([steal.status, steal.error?.code], [403, '42501']);
    });

    // A null for a NOT NULL column is PostgreSQL's 23502, and nothing is
    // written (never a 200 that kept the old value, nor a stored default).
    test('null for a NOT NULL column is refused with 23502 and changes nothing', async () => {
      const made = await sbAnn.from('pipeline').insert({ title: 'Nullable?', stage: 'lead', value: 5 }).select('id').single();
      assert.equal(made.error, null);
      const upd = await sbAnn.from('pipeline').update({ value: null }).eq('id', made.data.id).select('value');
      const ins = await sbAnn.from('pipeline').insert({ title: 'No value', stage: 'lead', value: null }).select('value');
      const { count } = await sbAnn.from('pipeline').select('*', { count: 'exact', head: true }).eq('title', 'No value');
      await sbAnn.from('pipeline').delete().in('title', ['Nullable?', 'No value']);
      assert.deepEqual([upd.status, upd.error?.code], [400, '23502']);
      assert.deepEqual([ins.status, ins.error?.code], [400, '23502']);
      assert.equal(count, 0);
    });

    test("a page's from('meetings') insert, update and delete reach another page's postgres_changes", async () => {
      // One createClient per page; both pages are Ann's, the second one writes.
      const page2 = connect(ann.token);
      const got = [];
      const bobGot = [];
      const subscribed = (channel) =>
        new Promise((resolve, reject) => {
          channel.subscribe((status, err) => {
            if (status === 'SUBSCRIBED') resolve();
            else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err || new Error(status));
          });
        });
      await subscribed(sbAnn.channel('x').on('postgres_changes', { event: '*', schema: 'public', table: 'meetings' }, (p) => got.push(p)));
      await subscribed(sbBob.channel('x').on('postgres_changes', { event: '*', schema: 'public', table: 'meetings' }, (p) => bobGot.push(p)));
      try {
        const ins = await page2
          .from('meetings')
          .insert({ title: 'Booked live', starts_at: '2026-12-10T10:00:00Z', ends_at: '2026-12-10T11:00:00Z', client_id: clients.acme.id })
          .select()
          .single();
        assert.equal(ins.error, null);
        await waitFor(() => got.length >= 1, 10000, 'the INSERT');
        assert.equal(got[0].eventType, 'INSERT');
        assert.equal(got[0].schema, 'public');
        assert.equal(got[0].table, 'meetings');
        assert.deepEqual(got[0].new, ins.data);
        assert.deepEqual(got[0].old, {});

        const upd = await page2
          .from('meetings')
          .update({ title: 'Booked live (moved)', starts_at: '2026-12-10T12:00:00Z', ends_at: '2026-12-10T13:00:00Z' })
          .eq('id', ins.data.id)
          .select()
          .single();
        assert.equal(upd.error, null);
        await waitFor(() => got.length >= 2, 10000, 'the UPDATE');
        assert.equal(got[1].eventType, 'UPDATE');
        assert.deepEqual(got[1].new, upd.data);
        assert.deepEqual(got[1].old, ins.data);

        const del = await page2.from('meetings').delete().eq('id', ins.data.id);
        assert.deepEqual([del.error, del.status], [null, 204]);
        await waitFor(() => got.length >= 3, 10000, 'the DELETE');
        assert.equal(got[2].eventType, 'DELETE');
        assert.deepEqual(got[2].new, {});
        assert.deepEqual(got[2].old, upd.data);

        // Bob's own write reaches Bob, so his silence about Ann's is real.
        const bobs = await sbBob
          .from('meetings')
          .insert({ title: 'Bob only', starts_at: '2026-12-11T10:00:00Z', ends_at: '2026-12-11T11:00:00Z' })
          .select()
          .single();
        assert.equal(bobs.error, null);
        await waitFor(() => bobGot.length >= 1, 10000, "Bob's own INSERT");
        assert.deepEqual(bobGot.map((p) => p.new.title), ['Bob only']);
        assert.equal(got.length, 3, 'Ann sees nothing of Bob');
      } finally {
        await page2.removeAllChannels();
        page2.realtime.disconnect();
      }
    });
  });
}
