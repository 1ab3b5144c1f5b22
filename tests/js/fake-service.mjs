// What the browser tests' fakes of outside services share: an HTTP server
// on 127.0.0.1 at a free port, whose handler's failures are answered 500 in
// the service's own error shape (so a fake's bug shows as the service
// failing, not as a hung request), and closing it.
import http from 'node:http';

export class FakeService {
  /** Start `fake` (an instance of a subclass with `handle(req, res)` and `errorBody(e)`). */
  static async listen(fake) {
    fake.server = http.createServer((req, res) => fake.handle(req, res).catch((e) => {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify(fake.errorBody(e)));
    }));
    await new Promise((r) => fake.server.listen(0, '127.0.0.1', r));
    fake.base = `http://127.0.0.1:${fake.server.address().port}`;
    return fake;
  }

  async close() {
    await new Promise((r) => this.server.close(r));
  }
}
